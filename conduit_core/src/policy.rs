//! Policy configuration and the values a policy hands back; shared by every policy module.

use crate::error::{CoreError, CoreResult};

/// Which selection rule a [`crate::bandit::Bandit`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    LinUcb,
    LinTs,
    BetaTs,
    Ucb1,
    EpsilonGreedy,
    Random,
    Fixed,
}

impl PolicyKind {
    /// Every kind, in snapshot-code order.
    pub const ALL: [PolicyKind; 7] = [
        PolicyKind::LinUcb,
        PolicyKind::LinTs,
        PolicyKind::BetaTs,
        PolicyKind::Ucb1,
        PolicyKind::EpsilonGreedy,
        PolicyKind::Random,
        PolicyKind::Fixed,
    ];

    /// The name used by the Python API.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::LinUcb => "linucb",
            PolicyKind::LinTs => "lin_ts",
            PolicyKind::BetaTs => "beta_ts",
            PolicyKind::Ucb1 => "ucb1",
            PolicyKind::EpsilonGreedy => "epsilon_greedy",
            PolicyKind::Random => "random",
            PolicyKind::Fixed => "fixed",
        }
    }

    /// Parses a Python-API name.
    pub fn parse(name: &str) -> CoreResult<Self> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = PolicyKind::ALL.iter().map(|k| k.name()).collect();
                CoreError::invalid(
                    "kind",
                    format!("unknown policy kind {name:?}; expected one of {names:?}"),
                )
            })
    }

    /// Stable one-byte code for snapshots.
    pub fn code(self) -> u8 {
        PolicyKind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }

    /// Inverse of [`Self::code`].
    pub fn from_code(code: u8) -> CoreResult<Self> {
        PolicyKind::ALL
            .get(usize::from(code))
            .copied()
            .ok_or_else(|| CoreError::corrupt("kind", format!("unknown policy kind code {code}")))
    }

    /// Whether the policy keeps `A`, `b` per arm (the others keep only scalar sums).
    pub fn is_linear(self) -> bool {
        matches!(self, PolicyKind::LinUcb | PolicyKind::LinTs)
    }
}

/// Largest feature dimension a linear policy accepts.
pub const MAX_LINEAR_DIM: usize = 2048;

/// Smallest ridge `λ` accepted. Every merge and re-factorisation factorises the stored `A`
/// (`linalg::invert_spd_packed`), and in a direction the observations (nearly) never reached
/// `A`'s smallest eigenvalue is just `λ`. Stored in f64, `A` carries rounding of about
/// `ε·max|Aᵢⱼ|` per entry (ε = 2.2e-16), up to `d·ε·max|Aᵢⱼ|` in that direction; once
/// that exceeds `λ` the factorisation meets a pivot at or below zero and the merge fails as
/// "not positive definite" although the statistics are. For normalised features (the
/// hasher's unit vectors) and weights ≤ 1, `max|Aᵢⱼ| ≤ λ + n` after `n` observations of the
/// arm, so `λ ≥ 1e-6` keeps `d·ε·n < λ/2` for a million observations per arm at the largest
/// dimension (2048), and proportionally more at smaller ones. At `λ = 1e-31` the first
/// merge of a trained arm failed; at 1e-10, after about 1e5 observations at d = 64. `1/λ`
/// (a fresh arm's `A⁻¹`) is then 1e6, far from any overflow. Larger features need a larger
/// ridge in proportion to their square (useful ridges are around 0.1 to 10).
pub const MIN_RIDGE: f64 = 1e-6;

/// Every tunable of every policy; each policy reads the ones it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub kind: PolicyKind,
    /// Feature dimension d (bias term included).
    pub dim: usize,
    /// LinUCB width multiplier / UCB1 exploration constant.
    pub alpha: f64,
    /// λ in `A = λI + Σ w·x·xᵀ`.
    pub ridge: f64,
    pub epsilon: f64,
    /// v in `θ ~ N(θ̂, v²A⁻¹)`.
    pub ts_scale: f64,
    pub prior_alpha: f64,
    pub prior_beta: f64,
    /// Forgetting factor per new observation in (0, 1]; 1 keeps everything. Scalar policies
    /// apply it to every arm, linear ones to the observed arm (see [`crate::Bandit`]).
    pub discount: f64,
    /// Sherman–Morrison steps per arm between exact re-factorisations.
    pub refactor_every: u64,
    /// Monte-Carlo draws for Thompson-sampling propensities.
    pub mc_samples: u32,
    pub seed: u64,
    pub fixed_arm: Option<String>,
    /// Prior mean of the reward for the linear policies: they model `r − reward_offset`
    /// (`b = Σ w·(r − offset)·x`) and score `offset + θᵀx (+ width)`, so an untried arm is
    /// expected to earn `offset` instead of 0. 0 is textbook LinUCB.
    pub reward_offset: f64,
}

impl PolicyConfig {
    /// The defaults of the Python `PolicyConfig` for `kind` and `dim`.
    pub fn new(kind: PolicyKind, dim: usize) -> Self {
        PolicyConfig {
            kind,
            dim,
            alpha: 1.0,
            ridge: 1.0,
            epsilon: 0.1,
            ts_scale: 0.5,
            prior_alpha: 1.0,
            prior_beta: 1.0,
            discount: 1.0,
            refactor_every: 1000,
            mc_samples: 200,
            seed: 0,
            fixed_arm: None,
            reward_offset: 0.0,
        }
    }

    /// Refuses any value a policy cannot run with, naming the field.
    pub fn validate(&self) -> CoreResult<()> {
        // Linear policies keep three packed d x d matrices per arm: 2048 is ~50 MB per arm,
        // far past any useful feature size, and refusing more keeps a typo from exhausting
        // memory.
        let max_dim = if self.kind.is_linear() {
            MAX_LINEAR_DIM
        } else {
            65_536
        };
        if self.dim == 0 || self.dim > max_dim {
            return Err(CoreError::invalid(
                "dim",
                format!(
                    "must be in [1, {max_dim}] for {}, got {}",
                    self.kind.name(),
                    self.dim
                ),
            ));
        }
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(CoreError::invalid(
                    field,
                    format!("must be finite and > 0, got {v}"),
                ))
            }
        };
        let non_negative = |field: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(CoreError::invalid(
                    field,
                    format!("must be finite and >= 0, got {v}"),
                ))
            }
        };
        non_negative("alpha", self.alpha)?;
        if !(self.ridge.is_finite() && self.ridge >= MIN_RIDGE) {
            return Err(CoreError::invalid(
                "ridge",
                format!(
                    "must be finite and >= {MIN_RIDGE:e} (a smaller ridge leaves the statistics \
                     too ill-conditioned for exact merges), got {}",
                    self.ridge
                ),
            ));
        }
        non_negative("ts_scale", self.ts_scale)?;
        positive("prior_alpha", self.prior_alpha)?;
        positive("prior_beta", self.prior_beta)?;
        if !(self.epsilon.is_finite() && (0.0..=1.0).contains(&self.epsilon)) {
            return Err(CoreError::invalid(
                "epsilon",
                format!("must be in [0, 1], got {}", self.epsilon),
            ));
        }
        if !(self.discount.is_finite() && self.discount > 0.0 && self.discount <= 1.0) {
            return Err(CoreError::invalid(
                "discount",
                format!("must be in (0, 1], got {}", self.discount),
            ));
        }
        if !(self.reward_offset.is_finite() && (0.0..=1.0).contains(&self.reward_offset)) {
            return Err(CoreError::invalid(
                "reward_offset",
                format!("must be in [0, 1], got {}", self.reward_offset),
            ));
        }
        if self.refactor_every == 0 {
            return Err(CoreError::invalid("refactor_every", "must be >= 1"));
        }
        if self.mc_samples == 0 || self.mc_samples > 1_000_000 {
            return Err(CoreError::invalid(
                "mc_samples",
                format!("must be in [1, 1000000], got {}", self.mc_samples),
            ));
        }
        match (&self.fixed_arm, self.kind) {
            (None, PolicyKind::Fixed) => Err(CoreError::invalid(
                "fixed_arm",
                "required when kind is \"fixed\"",
            )),
            (Some(name), _) if name.is_empty() => {
                Err(CoreError::invalid("fixed_arm", "must not be empty"))
            }
            _ => Ok(()),
        }
    }
}

/// What `select` decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Index of the chosen arm in the policy's arm list.
    pub arm: usize,
    /// `(arm index, score)` of every candidate, in candidate order.
    pub scores: Vec<(usize, f64)>,
    /// Probability the policy had of choosing `arm`, in (0, 1].
    pub propensity: f64,
    /// Posterior width of the chosen arm (>= 0).
    pub uncertainty: f64,
}

impl Selection {
    /// The first candidate other than the chosen arm with the highest score, and the chosen
    /// arm's score minus that score (its margin); None when the chosen arm was the only
    /// candidate or every other score is -inf or NaN. What a router reports as "the
    /// alternative it passed over".
    pub fn runner_up(&self) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        let mut chosen = f64::NAN;
        for &(i, score) in &self.scores {
            if i == self.arm {
                chosen = score;
            } else if score > best.map_or(f64::NEG_INFINITY, |(_, s)| s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, score)| (i, chosen - score))
    }
}

/// Per-arm totals reported to callers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmStats {
    pub weight_sum: f64,
    pub reward_sum: f64,
    pub updates: u64,
}

#[cfg(test)]
mod tests {
    use super::Selection;

    fn sel(arm: usize, scores: &[(usize, f64)]) -> Selection {
        Selection {
            arm,
            scores: scores.to_vec(),
            propensity: 1.0,
            uncertainty: 0.0,
        }
    }

    #[test]
    fn runner_up_is_the_first_best_other_candidate() {
        let four = [(0, 0.2), (1, 0.9), (2, 0.5), (3, 0.5)];
        assert_eq!(sel(1, &four).runner_up(), Some((2, 0.9 - 0.5)));
        assert_eq!(
            sel(0, &[(0, 0.1), (2, 0.7)]).runner_up(),
            Some((2, 0.1 - 0.7))
        );
        assert_eq!(sel(3, &[(3, 0.4)]).runner_up(), None);
        let minus_inf = [(0, 1.0), (1, f64::NEG_INFINITY)];
        assert_eq!(sel(0, &minus_inf).runner_up(), None);
        let plus_inf = [(0, 1.0), (1, f64::INFINITY)];
        assert_eq!(sel(0, &plus_inf).runner_up(), Some((1, f64::NEG_INFINITY)));
    }
}
