//! `Bandit`: a policy's arms, statistics and random stream, and the operations on them.
//! Every operation validates all of its inputs before it changes anything, so a refused call
//! leaves the statistics exactly as they were.

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::arm::Arm;
use crate::error::{CoreError, CoreResult};
use crate::policies;
use crate::policy::{ArmStats, PolicyConfig, Selection};

/// A contextual-bandit policy over named arms.
///
/// Discounting (`discount < 1`): each new observation first multiplies statistics by
/// `discount`. Scalar policies (UCB1, ε-greedy, Beta TS, baselines) discount every arm's
/// `Σw`, `Σw·r` (O(K) scalars), so an arm that is no longer played is forgotten too and gets
/// explored again. Linear policies discount only the observed arm's `A`, `b`, `Σw`, `Σw·r`
/// (the others are not touched: discounting all would cost O(K·d) per update). The ridge
/// `λI` is the prior, not an observation: it decays with `A` between exact re-factorisations,
/// which restore it, and never below `RIDGE_FLOOR·λ` (see `linear`). A `reapply` that replaces an existing observation (`old_weight > 0`) is not a new
/// observation and does not discount. Deltas exchanged between replicas carry undiscounted
/// sums: a merged delta is added as it is and then decays with the receiver's later updates.
///
/// Linear arms keep `b = Σ w·(r − reward_offset)·x` (the scalar sums keep the raw rewards),
/// so `θ` is the coefficient vector of the centred reward.
#[derive(Debug, Clone)]
pub struct Bandit {
    pub(crate) config: PolicyConfig,
    pub(crate) arms: Vec<Arm>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) version: u64,
    /// Version steps that came from merged deltas (see [`Self::local_version`]).
    pub(crate) merged_versions: u64,
    /// Bumped by every change a merge in flight cannot replay (see `merge`).
    pub(crate) merge_epoch: u64,
    pub(crate) journal: Option<crate::merge::Journal>,
    pub(crate) scratch: Vec<f64>,
    candidates: Vec<usize>,
}

/// Largest feature magnitude accepted. A linear arm adds `x·xᵀ` to `A`: past about 1e154 a
/// square overflows, and far before that (from about 1e16 against a ridge of 1) `A` is too
/// ill-conditioned for the exact re-factorisation and merges to resolve. Real features are
/// normalised (the hasher's are unit vectors). The bound keeps squares finite; it does not
/// make every stream mergeable: a rank-deficient stream of features near 1e6 against a ridge
/// of 1 can still make a merge's re-factorisation fail (measured at d = 64 after about 4,000
/// observations of 30 distinct vectors), which needs a ridge scaled to the features.
pub const MAX_FEATURE_ABS: f64 = 1e6;

pub(crate) fn check_features(x: &[f64], dim: usize) -> CoreResult<()> {
    if x.len() != dim {
        return Err(CoreError::invalid(
            "features",
            format!("expected {dim} values, got {}", x.len()),
        ));
    }
    if let Some(pos) = x
        .iter()
        .position(|v| !v.is_finite() || v.abs() > MAX_FEATURE_ABS)
    {
        let v = x[pos];
        let what = if v.is_finite() {
            format!("has magnitude above {MAX_FEATURE_ABS:e}")
        } else {
            "is not finite".to_owned()
        };
        return Err(CoreError::invalid(
            "features",
            format!("value at index {pos} {what} ({v})"),
        ));
    }
    Ok(())
}

pub(crate) fn check_unit(field: &'static str, v: f64) -> CoreResult<()> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(CoreError::invalid(
            field,
            format!("must be in [0, 1], got {v}"),
        ))
    }
}

pub(crate) fn check_arm_name(name: &str) -> CoreResult<()> {
    if name.is_empty() || name.len() > 1024 {
        return Err(CoreError::invalid("arm", "name must have 1 to 1024 bytes"));
    }
    Ok(())
}

impl Bandit {
    /// A policy with fresh statistics for `arms`.
    pub fn new(config: PolicyConfig, arms: &[&str]) -> CoreResult<Self> {
        config.validate()?;
        if arms.is_empty() {
            return Err(CoreError::invalid("arms", "must not be empty"));
        }
        let mut bandit = Bandit::with_arms(config, Vec::new());
        for name in arms {
            bandit.add_arm(name)?;
        }
        bandit.version = 0;
        Ok(bandit)
    }

    pub(crate) fn with_arms(config: PolicyConfig, arms: Vec<Arm>) -> Self {
        let index = arms
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let dim = config.dim;
        Bandit {
            config,
            arms,
            index,
            rng,
            version: 0,
            merged_versions: 0,
            merge_epoch: 0,
            journal: None,
            scratch: vec![0.0; dim],
            candidates: Vec::new(),
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The version without the steps of merged deltas: it changes only with this process's
    /// own changes (updates, re-applications, arm changes), so a caller can tell whether
    /// there is anything new to take as a delta.
    pub fn local_version(&self) -> u64 {
        self.version - self.merged_versions
    }

    /// Arm names in insertion order.
    pub fn arm_names(&self) -> impl Iterator<Item = &str> {
        self.arms.iter().map(|a| a.name.as_str())
    }

    pub fn arm_name(&self, idx: usize) -> &str {
        &self.arms[idx].name
    }

    pub fn arm_stats(&self) -> Vec<(&str, ArmStats)> {
        self.arms
            .iter()
            .map(|a| (a.name.as_str(), a.stats()))
            .collect()
    }

    /// `θ` of a linear arm (`None` for other policies).
    pub fn theta(&self, arm: &str) -> CoreResult<Option<&[f64]>> {
        let i = self.arm_index(arm)?;
        Ok(self.arms[i].linear.as_ref().map(|l| l.theta()))
    }

    /// The linear arm itself, for tests and benchmarks.
    pub fn linear_stats_mut(
        &mut self,
        arm: &str,
    ) -> CoreResult<Option<&mut crate::linear::LinearStats>> {
        let i = self.arm_index(arm)?;
        self.bump_merge_epoch();
        Ok(self.arms[i].linear.as_mut())
    }

    pub(crate) fn arm_index(&self, name: &str) -> CoreResult<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| CoreError::UnknownArm(name.to_owned()))
    }

    pub(crate) fn new_arm(&self, name: String) -> Arm {
        let linear = self.config.kind.is_linear().then_some((
            self.config.dim,
            self.config.ridge,
            self.config.discount < 1.0,
        ));
        Arm::new(name, linear)
    }

    /// Adds an arm with fresh statistics; the other arms are untouched.
    pub fn add_arm(&mut self, name: &str) -> CoreResult<()> {
        check_arm_name(name)?;
        if self.index.contains_key(name) {
            return Err(CoreError::DuplicateArm(name.to_owned()));
        }
        let arm = self.new_arm(name.to_owned());
        self.index.insert(name.to_owned(), self.arms.len());
        self.arms.push(arm);
        self.version += 1;
        self.bump_merge_epoch();
        Ok(())
    }

    /// Removes an arm and its statistics (including its not-yet-taken delta); the other arms
    /// are untouched. The last arm cannot be removed.
    pub fn remove_arm(&mut self, name: &str) -> CoreResult<()> {
        let i = self.arm_index(name)?;
        if self.arms.len() == 1 {
            return Err(CoreError::invalid("arm", "cannot remove the last arm"));
        }
        self.arms.remove(i);
        self.index = self
            .arms
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
        self.version += 1;
        self.bump_merge_epoch();
        Ok(())
    }

    fn resolve_candidates(&mut self, allowed: Option<&[&str]>) -> CoreResult<()> {
        self.candidates.clear();
        match allowed {
            None => self.candidates.extend(0..self.arms.len()),
            Some(names) => {
                if names.is_empty() {
                    return Err(CoreError::invalid("allowed", "must not be empty"));
                }
                for name in names {
                    let i = self.arm_index(name)?;
                    if self.candidates.contains(&i) {
                        return Err(CoreError::invalid(
                            "allowed",
                            format!("duplicate arm {name:?}"),
                        ));
                    }
                    self.candidates.push(i);
                }
            }
        }
        Ok(())
    }

    /// Chooses an arm among `allowed` (all arms when `None`) for context `x`.
    pub fn select(&mut self, x: &[f64], allowed: Option<&[&str]>) -> CoreResult<Selection> {
        check_features(x, self.config.dim)?;
        self.resolve_candidates(allowed)?;
        let mut ctx = policies::Ctx {
            cfg: &self.config,
            arms: &self.arms,
            cand: &self.candidates,
            x,
            rng: &mut self.rng,
        };
        Ok(policies::select(&mut ctx))
    }

    /// Adds one observation `(x, reward, weight)` to `arm`.
    pub fn update(&mut self, arm: &str, x: &[f64], reward: f64, weight: f64) -> CoreResult<()> {
        let i = self.arm_index(arm)?;
        check_features(x, self.config.dim)?;
        check_unit("reward", reward)?;
        check_unit("weight", weight)?;
        self.apply(i, x, weight, weight * reward, 1, true);
        Ok(())
    }

    /// Replaces an observation `(x, old_reward, old_weight)` of `arm` by
    /// `(x, new_reward, new_weight)`: `A += (w'−w)·x·xᵀ`, `b += (w'r' − wr)·x`.
    #[allow(clippy::too_many_arguments)]
    pub fn reapply(
        &mut self,
        arm: &str,
        x: &[f64],
        old_reward: f64,
        old_weight: f64,
        new_reward: f64,
        new_weight: f64,
    ) -> CoreResult<()> {
        let i = self.arm_index(arm)?;
        check_features(x, self.config.dim)?;
        check_unit("old_reward", old_reward)?;
        check_unit("old_weight", old_weight)?;
        check_unit("new_reward", new_reward)?;
        check_unit("new_weight", new_weight)?;
        let dw = new_weight - old_weight;
        let c = new_weight * new_reward - old_weight * old_reward;
        let fresh = old_weight == 0.0;
        if !fresh {
            // A downdate must leave the arm's statistics valid; check before touching them.
            let s = &self.arms[i].sums;
            if s.weight_sum + dw < -1e-9 * s.weight_sum.abs().max(1.0) {
                return Err(CoreError::invalid(
                    "old_weight",
                    "larger than the weight this arm holds: the old observation was never applied",
                ));
            }
            if let Some(lin) = &self.arms[i].linear {
                lin.check_rank1(x, dw, &mut self.scratch)?;
            }
        }
        if dw == 0.0 && c == 0.0 {
            return Ok(());
        }
        self.apply(i, x, dw, c, u64::from(fresh && new_weight > 0.0), fresh);
        Ok(())
    }

    fn apply(&mut self, i: usize, x: &[f64], dw: f64, c: f64, new_obs: u64, discount: bool) {
        if self.journal.is_some() {
            self.journal_op(i, x, dw, c, new_obs, discount);
        }
        let gamma = self.config.discount;
        if discount && gamma != 1.0 && !self.config.kind.is_linear() {
            // Every scalar arm forgets, including the ones not played: a neglected
            // arm's UCB1 bonus must grow back (and its Beta posterior widen) so that a
            // model that improved while unplayed is found again. O(K) scalars.
            for arm in &mut self.arms {
                arm.discount(gamma);
            }
        }
        let op = (x, dw, c, new_obs, discount);
        Self::apply_to_arm(&self.config, &mut self.scratch, &mut self.arms[i], op);
        self.version += 1;
    }

    /// One observation's change to one arm (for linear policies, all of it: they discount
    /// only the observed arm). Also replays observations on an arm rebuilt by a merge.
    /// `op` is `(x, dw, c, new_obs, discount)` as in [`Self::apply`].
    pub(crate) fn apply_to_arm(
        config: &PolicyConfig,
        scratch: &mut [f64],
        arm: &mut Arm,
        op: (&[f64], f64, f64, u64, bool),
    ) {
        let (x, dw, c, new_obs, discount) = op;
        let refactor_every = config.refactor_every;
        // Linear arms model r − offset: Σ(w'r' − wr)·x − offset·Σ(w' − w)·x. Exact for
        // updates and net deltas alike, since both are linear in (dw, c).
        let c_linear = c - config.reward_offset * dw;
        let gamma = config.discount;
        if discount && gamma != 1.0 && config.kind.is_linear() {
            arm.discount(gamma);
        }
        arm.sums.add(dw, c, new_obs);
        arm.delta.add(dw, c, new_obs);
        if let Some(lin) = &mut arm.linear {
            lin.apply(x, dw, c_linear, refactor_every, scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bandit;
    use crate::policy::{PolicyConfig, PolicyKind};

    /// Discounting forgets observations, not the ridge prior: a long run of one arm on a few
    /// directions must keep every number finite, the width of a direction it never saw
    /// bounded, and the snapshot loadable. Before, the ridge decayed with the statistics, so
    /// that width grew as `discount^(-n/2)` (1e26 after 12,000 updates at 0.99), then `A⁻¹`
    /// overflowed: scores froze at garbage and `from_bytes` refused every later snapshot.
    #[test]
    fn long_discounted_runs_keep_the_ridge_and_stay_finite() {
        for kind in [PolicyKind::LinUcb, PolicyKind::LinTs] {
            for (discount, n) in [(0.99, 80_000), (0.5, 3_000)] {
                let dim = 8;
                let mut cfg = PolicyConfig::new(kind, dim);
                cfg.discount = discount;
                cfg.ridge = 2.0;
                let mut p = Bandit::new(cfg, &["a", "b"]).unwrap();
                let mut seen = vec![0.0; dim];
                seen[0] = 1.0;
                seen[1] = 0.5;
                for t in 0..n {
                    p.update("a", &seen, (t % 7) as f64 / 6.0, 1.0).unwrap();
                }
                let mut unseen = vec![0.0; dim];
                unseen[5] = 1.0;
                let sel = p.select(&unseen, Some(&["a"])).unwrap();
                // x = e5 is orthogonal to every observation: xᵀA⁻¹x = 1/ridge' where ridge'
                // is the ridge as discounted since it was last restored (>= RIDGE_FLOOR·λ).
                let bound = (1.0 / (2.0 * crate::linear::RIDGE_FLOOR)).sqrt();
                assert!(
                    sel.uncertainty.is_finite() && sel.uncertainty <= bound * (1.0 + 1e-9),
                    "{kind:?} {discount}: width {} above {bound}",
                    sel.uncertainty
                );
                assert!(sel.uncertainty >= (0.5f64).sqrt() * (1.0 - 1e-9));
                let sel = p.select(&seen, None).unwrap();
                assert!(sel.scores.iter().all(|(_, s)| s.is_finite()), "{sel:?}");
                let lin = p.linear_stats_mut("a").unwrap().unwrap();
                assert!(lin.theta().iter().all(|v| v.is_finite()));
                assert!(lin.a_inv_matrix().iter().all(|v| v.is_finite()));
                let restored = Bandit::from_bytes(&p.to_bytes());
                assert!(restored.is_ok(), "{kind:?} {discount}: {restored:?}");
            }
        }
    }

    /// A finite feature whose square overflows (or whose square swamps the ridge past what a
    /// Cholesky factorisation can resolve) used to be accepted: one update put `inf` into `A`
    /// (every later snapshot refused by `from_bytes`), or made every merge of the arm's delta
    /// fail as "not positive definite", so replicas could never converge again. Such values
    /// are refused like NaN, naming the field, and the largest accepted ones keep snapshots
    /// and merges working.
    #[test]
    fn features_too_large_for_the_statistics_are_refused() {
        use crate::bandit::MAX_FEATURE_ABS;
        for kind in [PolicyKind::LinUcb, PolicyKind::BetaTs] {
            let mut p = Bandit::new(PolicyConfig::new(kind, 3), &["a", "b"]).unwrap();
            let before = p.to_bytes();
            for big in [1e16, -1e155, 1e300, MAX_FEATURE_ABS * 1.000_001] {
                let x = [1.0, big, 0.0];
                let err = p.update("a", &x, 0.5, 1.0).unwrap_err();
                assert!(err.to_string().starts_with("features:"), "{err}");
                assert!(p.reapply("a", &x, 0.5, 0.0, 0.5, 1.0).is_err());
                assert!(p.select(&x, None).is_err());
            }
            assert_eq!(p.to_bytes(), before);
            let mut other = Bandit::new(PolicyConfig::new(kind, 3), &["a", "b"]).unwrap();
            for _ in 0..1000 {
                p.update("a", &[1.0, MAX_FEATURE_ABS, -MAX_FEATURE_ABS], 0.5, 1.0)
                    .unwrap();
                p.update("a", &[1.0, 0.0, 0.0], 1.0, 1.0).unwrap();
            }
            other.merge_delta(&p.take_delta()).unwrap();
            assert!(Bandit::from_bytes(&p.to_bytes()).is_ok());
            assert!(Bandit::from_bytes(&other.to_bytes()).is_ok());
        }
    }
}
