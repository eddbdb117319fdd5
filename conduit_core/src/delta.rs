//! Additive deltas exchanged between replicas (`take_delta` / `merge_delta`).
//!
//! A delta holds, per arm touched since the last take, the sums it applied locally:
//! `Σ dw·x·xᵀ` (packed) and `Σ (c − offset·dw)·x` for linear policies, `Σ dw`, `Σ c` and the count of new
//! observations for all. Adding a delta to another replica gives that replica the statistics
//! of one process that saw both streams. Merged deltas are not recorded in the receiver's own
//! delta, so they are never sent back (no echo). With `discount < 1` the sums are
//! undiscounted; see [`Bandit`] for how they then decay.
//!
//! Layout (little-endian): magic `CNDTDLTA`, format u16, linear flag u8, dim u64, reward
//! offset f64 (format 2; linear deltas must match the receiver's), arm count
//! u32, per arm: name, `Σ dw`, `Σ c`, count, then for linear deltas the packed matrix and
//! the vector; a CRC-32 of all of it.

use crate::arm::ScalarSums;
use crate::bandit::{check_arm_name, Bandit};
use crate::codec::{Reader, Writer};
use crate::error::{CoreError, CoreResult};
use crate::kernels::{packed_len, row_start};
use crate::linalg::invert_spd_packed;
use crate::linear::LinearStats;
use crate::merge::Staged;
use crate::policy::PolicyConfig;

const MAGIC: &[u8; 8] = b"CNDTDLTA";
/// Version 2 added `reward_offset` after `dim`; version 1 deltas are read as offset 0.
const FORMAT_VERSION: u16 = 2;

pub(crate) struct ArmDelta {
    pub(crate) name: String,
    pub(crate) sums: ScalarSums,
    pub(crate) linear: Option<(Vec<f64>, Vec<f64>)>,
}

impl Bandit {
    /// The additive statistics applied locally since the previous call, then reset.
    pub fn take_delta(&mut self) -> Vec<u8> {
        let linear = self.config.kind.is_linear();
        let dim = self.config.dim;
        let mut w = Writer::default();
        w.bytes(MAGIC);
        w.u16(FORMAT_VERSION);
        w.u8(u8::from(linear));
        w.u64(dim as u64);
        w.f64(self.config.reward_offset);
        // The scalar sums alone miss an arm whose re-applied rewards cancel in `Σ c` (or
        // whose weights cancel in `Σ dw`) while its vector or matrix part moved.
        // A merge in flight cloned the delta bookkeeping this resets.
        self.bump_merge_epoch();
        let touched: Vec<usize> = (0..self.arms.len())
            .filter(|&i| {
                let arm = &mut self.arms[i];
                let d = &arm.delta;
                d.updates > 0
                    || d.weight_sum != 0.0
                    || d.reward_sum != 0.0
                    || arm
                        .linear
                        .as_mut()
                        .is_some_and(LinearStats::has_local_delta)
            })
            .collect();
        w.u32(touched.len() as u32);
        for i in touched {
            let arm = &mut self.arms[i];
            w.str(&arm.name);
            w.f64(arm.delta.weight_sum);
            w.f64(arm.delta.reward_sum);
            w.u64(arm.delta.updates);
            arm.delta = ScalarSums::default();
            if let Some(lin) = &mut arm.linear {
                let (xx, rx) = lin.take_delta();
                w.f64s(&xx);
                w.f64s(&rx);
            }
        }
        w.finish()
    }

    /// Adds another replica's delta: arms unknown here are added fresh first, touched linear
    /// arms are re-factorised exactly. All or nothing: on any error nothing changes.
    pub fn merge_delta(&mut self, data: &[u8]) -> CoreResult<()> {
        self.merge_delta_filtered(data, false).map(|_| ())
    }

    /// [`Self::merge_delta`], but with `skip_unknown` the arms this policy does not have are
    /// left out (their statistics are not merged) instead of added; returns their names.
    pub fn merge_delta_filtered(
        &mut self,
        data: &[u8],
        skip_unknown: bool,
    ) -> CoreResult<Vec<String>> {
        let mut deltas = parse_delta(&self.config, data)?;
        let mut skipped = Vec::new();
        if skip_unknown {
            deltas.retain(|d| {
                let known = self.index.contains_key(&d.name);
                if !known {
                    skipped.push(d.name.clone());
                }
                known
            });
        }
        if deltas.is_empty() {
            return Ok(skipped);
        }
        // Build every merged arm aside, then commit, so a failure leaves the policy as it was.
        let mut staged: Vec<Staged> = Vec::with_capacity(deltas.len());
        for d in deltas {
            let existing = self.index.get(&d.name).copied();
            let mut arm = match existing {
                Some(i) => self.arms[i].clone(),
                None => self.new_arm(d.name.clone()),
            };
            arm.sums
                .add(d.sums.weight_sum, d.sums.reward_sum, d.sums.updates);
            if let (Some(lin), Some((xx, rx))) = (&mut arm.linear, &d.linear) {
                lin.merge(xx, rx)?;
            }
            staged.push((existing, arm));
        }
        self.install_merged(staged, None);
        Ok(skipped)
    }
}

/// Reads a delta, refusing one this policy's `config` cannot merge. Needs only the
/// configuration, so a merge can parse before it takes the policy.
pub(crate) fn parse_delta(config: &PolicyConfig, data: &[u8]) -> CoreResult<Vec<ArmDelta>> {
    let mut r = Reader::open(data, MAGIC, "delta")?;
    let format = r.u16()?;
    if !(1..=FORMAT_VERSION).contains(&format) {
        return Err(CoreError::corrupt(
            "delta",
            format!("format version {format} is not supported"),
        ));
    }
    let linear = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(CoreError::corrupt("delta", "bad policy-family flag")),
    };
    if linear != config.kind.is_linear() {
        return Err(CoreError::invalid(
            "delta",
            format!(
                "comes from a {} policy; this {} policy keeps {} statistics",
                if linear { "linear" } else { "non-linear" },
                config.kind.name(),
                if config.kind.is_linear() {
                    "linear"
                } else {
                    "scalar"
                }
            ),
        ));
    }
    let dim = r.u64()?;
    if dim != config.dim as u64 {
        return Err(CoreError::invalid(
            "delta",
            format!(
                "dimension {dim} does not match this policy's dimension {}",
                config.dim
            ),
        ));
    }
    let offset = if format >= 2 {
        r.f64("reward_offset")?
    } else {
        0.0
    };
    // A linear delta's `Σ c·x` is centred on the sender's offset; adding it to statistics
    // centred on another offset would silently bias every θ.
    if linear && offset != config.reward_offset {
        return Err(CoreError::invalid(
            "delta",
            format!(
                "reward_offset {offset} does not match this policy's reward_offset {}",
                config.reward_offset
            ),
        ));
    }
    let n = r.u32()? as usize;
    let mut out: Vec<ArmDelta> = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let name = r.str("arm")?;
        check_arm_name(&name).map_err(|e| CoreError::corrupt("arm", e.to_string()))?;
        if out.iter().any(|d| d.name == name) {
            return Err(CoreError::corrupt("arm", format!("duplicate arm {name:?}")));
        }
        let sums = ScalarSums {
            weight_sum: r.f64("weight_sum")?,
            reward_sum: r.f64("reward_sum")?,
            updates: r.u64()?,
        };
        let lin = if linear {
            let d = config.dim;
            Some((r.f64s(packed_len(d), "delta")?, r.f64s(d, "delta")?))
        } else {
            None
        };
        out.push(ArmDelta {
            name,
            sums,
            linear: lin,
        });
    }
    r.end()?;
    Ok(out)
}

/// A linear arm's side of the exchange: what it applied locally since the last take, and
/// another replica's sums added in.
impl LinearStats {
    /// Whether anything was applied locally since the last `take_delta` (pending terms
    /// folded first). O(d²), for `take_delta` only.
    pub(crate) fn has_local_delta(&mut self) -> bool {
        if self.delta_rx.iter().any(|v| *v != 0.0) {
            return true;
        }
        self.flush();
        if self.explicit_delta {
            self.delta_base.iter().any(|v| *v != 0.0)
        } else {
            self.a != self.delta_base
        }
    }

    /// Returns `(Σ dw·x·xᵀ, Σ c·x)` accumulated since the last call and resets both.
    pub fn take_delta(&mut self) -> (Vec<f64>, Vec<f64>) {
        self.flush();
        let xx = if self.explicit_delta {
            std::mem::replace(&mut self.delta_base, vec![0.0; packed_len(self.dim)])
        } else {
            // Without discounting the lazy scale is always 1, so `a` is the true A.
            let xx = self
                .a
                .iter()
                .zip(&self.delta_base)
                .map(|(a, b)| a - b)
                .collect();
            self.delta_base.copy_from_slice(&self.a);
            xx
        };
        let rx = std::mem::replace(&mut self.delta_rx, vec![0.0; self.dim]);
        (xx, rx)
    }

    /// Adds `xx` (packed `Σ w·x·xᵀ`) and `rx` (`Σ w·r·x`) from another replica and
    /// re-factorises exactly. Fails, leaving everything unchanged, if the sum is not SPD.
    pub fn merge(&mut self, xx: &[f64], rx: &[f64]) -> CoreResult<()> {
        self.flush();
        // The true A (lazy scale folded, discounted ridge restored, see `RIDGE_FLOOR`) plus
        // the delta, built aside so that a failure changes nothing.
        let s = self.scale;
        let mut a: Vec<f64> = self.a.iter().zip(xx).map(|(a, m)| a * s + m).collect();
        if s != 1.0 {
            for i in 0..self.dim {
                a[row_start(self.dim, i)] += (1.0 - s) * self.ridge;
            }
        }
        let a_inv = invert_spd_packed(&a, self.dim).ok_or_else(|| {
            CoreError::corrupt("delta", "merged statistics are not positive definite")
        })?;
        self.scale = 1.0;
        if !self.explicit_delta {
            // Merged terms are not local: keep them out of the next take (no echo).
            for (b, m) in self.delta_base.iter_mut().zip(xx) {
                *b += m;
            }
        }
        self.a = a;
        self.a_inv = a_inv;
        self.refresh_mirror();
        for (b, r) in self.b.iter_mut().zip(rx) {
            *b += r;
        }
        self.refresh_theta();
        self.since_refactor = 0;
        Ok(())
    }
}
