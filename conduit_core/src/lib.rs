//! Conduit's bandit core: routing policies kept as additive sufficient statistics, feature
//! hashing, snapshots and replica deltas. Pure Rust; the Python binding lives in `py` and is
//! compiled only with the `python` feature.

pub mod arm;
pub mod bandit;
mod codec;
pub mod delta;
pub mod error;
pub mod features;
pub mod kernels;
pub mod linalg;
pub mod linear;
pub mod merge;
mod parallel;
mod policies;
pub mod policy;
pub mod snapshot;

#[cfg(feature = "python")]
mod py;

pub use bandit::Bandit;
pub use error::{CoreError, CoreResult};
pub use features::FeatureHasher;
pub use policy::{ArmStats, PolicyConfig, PolicyKind, Selection};
