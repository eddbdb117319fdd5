//! The one error type of the core. Every refused input names the field that was wrong, and
//! every check runs before any statistic is touched, so an error never leaves a half-applied
//! update behind.

/// Everything the core can refuse. `field` is the argument or snapshot part that was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// An argument had a value the core cannot use (NaN, out of range, wrong length, ...).
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// An arm name that the policy does not know.
    #[error("arm: unknown arm {0:?}")]
    UnknownArm(String),
    /// An arm name that the policy already has.
    #[error("arm: duplicate arm {0:?}")]
    DuplicateArm(String),
    /// A snapshot or delta that cannot be loaded; nothing was loaded.
    #[error("{field}: {message}")]
    Corrupt {
        field: &'static str,
        message: String,
    },
}

impl CoreError {
    /// Shorthand for [`CoreError::InvalidArgument`].
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    /// Shorthand for [`CoreError::Corrupt`].
    pub fn corrupt(field: &'static str, message: impl Into<String>) -> Self {
        CoreError::Corrupt {
            field,
            message: message.into(),
        }
    }
}

/// Result alias used throughout the crate.
pub type CoreResult<T> = Result<T, CoreError>;
