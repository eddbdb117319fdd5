//! One arm: its scalar sums (every policy), its linear statistics (linear policies only), and
//! the scalar part of what it learned locally since the last `take_delta`.

use crate::linear::LinearStats;
use crate::policy::ArmStats;

/// Scalar additive sums: `Σw`, `Σw·r` and the number of observations.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ScalarSums {
    pub weight_sum: f64,
    pub reward_sum: f64,
    pub updates: u64,
}

impl ScalarSums {
    pub(crate) fn add(&mut self, dw: f64, c: f64, new_observations: u64) {
        self.weight_sum += dw;
        self.reward_sum += c;
        self.updates += new_observations;
    }
}

/// An arm's whole state.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub name: String,
    pub sums: ScalarSums,
    pub linear: Option<LinearStats>,
    /// Scalar sums applied locally since the last `take_delta` (undiscounted).
    pub delta: ScalarSums,
}

impl Arm {
    /// A fresh arm; `linear` carries `(dim, ridge, discounted)` for linear policies.
    pub fn new(name: String, linear: Option<(usize, f64, bool)>) -> Self {
        Arm {
            name,
            sums: ScalarSums::default(),
            linear: linear.map(|(dim, ridge, discounted)| LinearStats::new(dim, ridge, discounted)),
            delta: ScalarSums::default(),
        }
    }

    /// Mean reward (`Σw·r / Σw`), `None` before any weight.
    pub fn mean_reward(&self) -> Option<f64> {
        (self.sums.weight_sum > 0.0)
            .then(|| (self.sums.reward_sum / self.sums.weight_sum).clamp(0.0, 1.0))
    }

    /// Multiplies every statistic by `gamma`.
    pub fn discount(&mut self, gamma: f64) {
        if gamma == 1.0 {
            return;
        }
        self.sums.weight_sum *= gamma;
        self.sums.reward_sum *= gamma;
        if let Some(lin) = &mut self.linear {
            lin.discount(gamma);
        }
    }

    /// Reported totals.
    pub fn stats(&self) -> ArmStats {
        ArmStats {
            weight_sum: self.sums.weight_sum,
            reward_sum: self.sums.reward_sum,
            updates: self.sums.updates,
        }
    }
}
