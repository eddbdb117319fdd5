//! Merging another replica's delta into a shared policy without holding it for the math.
//!
//! A linear arm's merge re-factorises `A⁻¹` exactly (O(d³)): at d = 386 that is several
//! milliseconds per arm, and every `select` and `update` of the policy used to wait for all
//! of it. [`merge_delta_shared`] instead works in three phases:
//!
//! 1. per touched arm, a short hold: clone the arm's additive statistics (not its caches)
//!    and start a journal of the observations later applied to it;
//! 2. with nothing held: add the delta to each clone and re-factorise it;
//! 3. one short hold: replay each arm's journal on its rebuilt clone through the same code
//!    path as the original updates, then swap the rebuilt arms in.
//!
//! The result is exactly what one process gets when the merge happens at the moment each
//! arm was cloned and the journaled observations after it: statistics are additive, so
//! without discounting the order does not matter at all, and with it this is one valid
//! sequential order. Anything the journal cannot replay (an arm added or removed,
//! `take_delta`, another merge) bumps the policy's merge epoch; phase 3 then finds the epoch
//! changed, discards the rebuilt arms and starts again, and after [`ATTEMPTS`] tries the
//! merge runs the old way, whole, under one hold. A failed merge changes nothing.

use std::sync::Mutex;

use crate::arm::Arm;
use crate::bandit::Bandit;
use crate::delta::parse_delta;
use crate::error::CoreResult;
use crate::linear::LinearStats;

/// Rebuilds tried before the merge is done under one hold of the policy.
pub const ATTEMPTS: usize = 3;

/// One observation applied to an arm while a merge was rebuilding it.
#[derive(Debug, Clone)]
struct Op {
    x: Vec<f64>,
    dw: f64,
    c: f64,
    new_obs: u64,
    discount: bool,
}

/// Observations per arm index since that arm was cloned, for the merge in flight.
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal {
    arms: Vec<(usize, Vec<Op>)>,
}

/// Access to a policy shared between threads: `with` runs `f` while holding it.
pub trait Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Bandit) -> R) -> R;
}

impl Shared for Mutex<Bandit> {
    fn with<R>(&self, f: impl FnOnce(&mut Bandit) -> R) -> R {
        f(&mut self.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// An arm cloned for a merge: its slot (`None`: new to this policy) and the clone.
pub(crate) type Staged = (Option<usize>, Arm);

/// What phase 1 made of one arm of the delta.
enum Stage {
    Arm(Box<Staged>),
    /// Not in this policy, and the caller asked to skip such arms.
    Unknown,
    /// The merge epoch moved: start over.
    Invalidated,
}

impl Bandit {
    /// Invalidates a merge in flight: the arms changed in a way its journal cannot replay.
    pub(crate) fn bump_merge_epoch(&mut self) {
        self.merge_epoch += 1;
        self.journal = None;
    }

    /// Records an observation of arm `i` if a merge in flight has cloned that arm.
    pub(crate) fn journal_op(
        &mut self,
        i: usize,
        x: &[f64],
        dw: f64,
        c: f64,
        new_obs: u64,
        discount: bool,
    ) {
        if let Some(journal) = &mut self.journal {
            if let Some((_, ops)) = journal.arms.iter_mut().find(|(k, _)| *k == i) {
                ops.push(Op {
                    x: x.to_vec(),
                    dw,
                    c,
                    new_obs,
                    discount,
                });
            }
        }
    }

    /// Phase 1 begins: a fresh journal and the epoch the merge must still find at the end.
    fn begin_merge(&mut self) -> u64 {
        self.bump_merge_epoch();
        self.journal = Some(Journal::default());
        self.merge_epoch
    }

    /// Phase 1, one arm: its clone (a fresh arm if unknown here), journaled from now on.
    fn stage_arm(&mut self, epoch: u64, name: &str, skip_unknown: bool) -> Stage {
        if self.merge_epoch != epoch {
            return Stage::Invalidated;
        }
        let Some(&i) = self.index.get(name) else {
            if skip_unknown {
                return Stage::Unknown;
            }
            return Stage::Arm(Box::new((None, self.new_arm(name.to_owned()))));
        };
        let arm = &self.arms[i];
        let clone = Arm {
            name: arm.name.clone(),
            sums: arm.sums,
            linear: arm.linear.as_ref().map(LinearStats::clone_for_merge),
            delta: arm.delta,
        };
        match self.journal.as_mut() {
            Some(journal) => journal.arms.push((i, Vec::new())),
            None => return Stage::Invalidated,
        }
        Stage::Arm(Box::new((Some(i), clone)))
    }

    /// Phase 3: replays the journal on the rebuilt arms and swaps them in; returns the arms
    /// replaced (to be dropped by the caller after letting go), or `None` if the merge was
    /// invalidated and nothing changed.
    fn commit_merge(&mut self, epoch: u64, staged: Vec<Staged>) -> Option<Vec<Arm>> {
        if self.merge_epoch != epoch {
            return None;
        }
        let journal = self.journal.take().unwrap_or_default();
        Some(self.install_merged(staged, Some(&journal)))
    }

    /// Puts merged arms built aside in place, each in its slot (the arm it replaces is
    /// returned, for the caller to drop) or as a new arm, after replaying on it what
    /// `journal` recorded for its slot meanwhile; then counts the merge.
    pub(crate) fn install_merged(
        &mut self,
        staged: Vec<Staged>,
        journal: Option<&Journal>,
    ) -> Vec<Arm> {
        let mut replaced = Vec::with_capacity(staged.len());
        for (slot, mut arm) in staged {
            match slot {
                Some(i) => {
                    let ops = journal.and_then(|j| j.arms.iter().find(|(k, _)| *k == i));
                    for op in ops.map(|(_, ops)| ops.as_slice()).unwrap_or_default() {
                        let op = (op.x.as_slice(), op.dw, op.c, op.new_obs, op.discount);
                        Self::apply_to_arm(&self.config, &mut self.scratch, &mut arm, op);
                    }
                    replaced.push(std::mem::replace(&mut self.arms[i], arm));
                }
                None => {
                    self.index.insert(arm.name.clone(), self.arms.len());
                    self.arms.push(arm);
                }
            }
        }
        self.version += 1;
        self.merged_versions += 1;
        self.bump_merge_epoch();
        replaced
    }

    /// Drops the journal of a merge that failed (nothing else changed).
    fn abandon_merge(&mut self, epoch: u64) {
        if self.merge_epoch == epoch {
            self.journal = None;
        }
    }
}

impl LinearStats {
    /// The additive statistics and the delta bookkeeping, without the caches a merge
    /// recomputes (`A⁻¹`, its mirror and buffered corrections, `θ`).
    fn clone_for_merge(&self) -> LinearStats {
        LinearStats {
            dim: self.dim,
            a: self.a.clone(),
            a_inv: Vec::new(),
            a_inv_f32: Vec::new(),
            b: self.b.clone(),
            theta: Vec::new(),
            scale: self.scale,
            ridge: self.ridge,
            since_refactor: self.since_refactor,
            pending_w: self.pending_w.clone(),
            pending_x: self.pending_x.clone(),
            pending_raw: self.pending_raw.clone(),
            inv_pending_c: Vec::new(),
            inv_pending_u: Vec::new(),
            explicit_delta: self.explicit_delta,
            delta_base: self.delta_base.clone(),
            delta_rx: self.delta_rx.clone(),
        }
    }
}

/// Adds another replica's delta to the policy behind `policy`, doing the exact
/// re-factorisations without holding it (see the module documentation). Same result, the
/// same errors and the same `skip_unknown` as [`Bandit::merge_delta_filtered`]; all or
/// nothing.
pub fn merge_delta_shared(
    policy: &impl Shared,
    data: &[u8],
    skip_unknown: bool,
) -> CoreResult<Vec<String>> {
    let config = policy.with(|b| b.config.clone());
    if !config.kind.is_linear() {
        // Scalar sums: nothing worth taking outside.
        return policy.with(|b| b.merge_delta_filtered(data, skip_unknown));
    }
    let deltas = parse_delta(&config, data)?;
    if deltas.is_empty() {
        return Ok(Vec::new());
    }
    'attempt: for _ in 0..ATTEMPTS {
        let epoch = policy.with(Bandit::begin_merge);
        let mut staged = Vec::with_capacity(deltas.len());
        let mut skipped = Vec::new();
        for (k, d) in deltas.iter().enumerate() {
            match policy.with(|b| b.stage_arm(epoch, &d.name, skip_unknown)) {
                Stage::Arm(s) => staged.push((k, *s)),
                Stage::Unknown => skipped.push(d.name.clone()),
                Stage::Invalidated => continue 'attempt,
            }
        }
        if staged.is_empty() {
            policy.with(|b| b.abandon_merge(epoch));
            return Ok(skipped);
        }
        for (k, (_, arm)) in &mut staged {
            let d = &deltas[*k];
            arm.sums
                .add(d.sums.weight_sum, d.sums.reward_sum, d.sums.updates);
            if let (Some(lin), Some((xx, rx))) = (&mut arm.linear, &d.linear) {
                if let Err(err) = lin.merge(xx, rx) {
                    policy.with(|b| b.abandon_merge(epoch));
                    return Err(err);
                }
            }
        }
        let staged = staged.into_iter().map(|(_, s)| s).collect();
        // The replaced arms (megabytes at a large dimension) are freed after letting go.
        if let Some(replaced) = policy.with(|b| b.commit_merge(epoch, staged)) {
            drop(replaced);
            return Ok(skipped);
        }
    }
    policy.with(|b| b.merge_delta_filtered(data, skip_unknown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicyConfig, PolicyKind};

    fn x(dim: usize, t: usize) -> Vec<f64> {
        (0..dim).map(|i| ((i * 7 + t * 13) as f64).sin()).collect()
    }

    fn fed(kind: PolicyKind, dim: usize, discount: f64, seed: usize, n: usize) -> Bandit {
        let mut cfg = PolicyConfig::new(kind, dim);
        cfg.discount = discount;
        let mut p = Bandit::new(cfg, &["a", "b"]).unwrap();
        for t in 0..n {
            let arm = if (t + seed).is_multiple_of(3) {
                "b"
            } else {
                "a"
            };
            p.update(arm, &x(dim, t + 100 * seed), (t % 5) as f64 / 4.0, 0.75)
                .unwrap();
        }
        p
    }

    fn thetas(p: &Bandit) -> Vec<Vec<f64>> {
        p.arm_names()
            .map(|n| p.theta(n).unwrap().unwrap_or_default().to_vec())
            .collect()
    }

    fn close(a: &[Vec<f64>], b: &[Vec<f64>]) -> bool {
        a.len() == b.len()
            && a.iter()
                .flatten()
                .zip(b.iter().flatten())
                .all(|(u, v)| (u - v).abs() <= 1e-9 * (1.0 + v.abs()))
    }

    /// Without interleaving the shared merge is bit-identical to the merge under one hold.
    #[test]
    fn shared_merge_equals_the_plain_merge() {
        for (kind, discount) in [
            (PolicyKind::LinUcb, 1.0),
            (PolicyKind::LinTs, 0.97),
            (PolicyKind::BetaTs, 1.0),
        ] {
            let mut delta_src = fed(kind, 9, discount, 1, 40);
            delta_src.add_arm("c").unwrap();
            delta_src.update("c", &x(9, 3), 0.5, 1.0).unwrap();
            let delta = delta_src.take_delta();
            let mut plain = fed(kind, 9, discount, 2, 30);
            let shared = Mutex::new(plain.clone());
            plain.merge_delta(&delta).unwrap();
            merge_delta_shared(&shared, &delta, false).unwrap();
            let mut shared = shared.into_inner().unwrap();
            assert_eq!(shared.to_bytes(), plain.to_bytes(), "{kind:?}");
            assert_eq!(shared.version(), plain.version());
            assert_eq!(shared.local_version(), plain.local_version());
        }
    }

    /// Observations applied between the clone and the swap are kept: the result is the
    /// policy that merged first and saw them afterwards, including the next delta it takes.
    #[test]
    fn observations_during_a_merge_are_replayed() {
        for discount in [1.0, 0.95] {
            let delta = fed(PolicyKind::LinUcb, 6, discount, 3, 25).take_delta();
            let base = fed(PolicyKind::LinUcb, 6, discount, 4, 20);
            let mut live = base.clone();
            let epoch = live.begin_merge();
            let mut staged: Vec<Staged> = ["a", "b"]
                .iter()
                .map(|n| match live.stage_arm(epoch, n, false) {
                    Stage::Arm(s) => *s,
                    _ => unreachable!("nothing invalidated the merge"),
                })
                .collect();
            let deltas = parse_delta(live.config(), &delta).unwrap();
            let late: Vec<(&str, Vec<f64>)> = (0..5)
                .map(|t| (if t % 2 == 0 { "a" } else { "b" }, x(6, 500 + t)))
                .collect();
            for (arm, v) in &late {
                live.update(arm, v, 0.25, 1.0).unwrap();
            }
            live.reapply("a", &late[0].1, 0.25, 1.0, 0.75, 0.5).unwrap();
            for ((_, arm), d) in staged.iter_mut().zip(&deltas) {
                arm.sums
                    .add(d.sums.weight_sum, d.sums.reward_sum, d.sums.updates);
                let (xx, rx) = d.linear.as_ref().unwrap();
                arm.linear.as_mut().unwrap().merge(xx, rx).unwrap();
            }
            assert!(live.commit_merge(epoch, staged).is_some());

            let mut sequential = base.clone();
            sequential.merge_delta(&delta).unwrap();
            for (arm, v) in &late {
                sequential.update(arm, v, 0.25, 1.0).unwrap();
            }
            sequential
                .reapply("a", &late[0].1, 0.25, 1.0, 0.75, 0.5)
                .unwrap();
            assert!(close(&thetas(&live), &thetas(&sequential)), "{discount}");
            assert_eq!(live.arm_stats(), sequential.arm_stats());
            // The next delta carries the observations once, and not the merged one.
            let mut got = fed(PolicyKind::LinUcb, 6, discount, 9, 0);
            got.merge_delta(&live.take_delta()).unwrap();
            let mut want = fed(PolicyKind::LinUcb, 6, discount, 9, 0);
            want.merge_delta(&sequential.take_delta()).unwrap();
            assert!(close(&thetas(&got), &thetas(&want)), "{discount}");
        }
    }

    /// A change the journal cannot replay (here `take_delta`) makes the merge start over.
    #[test]
    fn an_unreplayable_change_invalidates_the_merge() {
        let delta = fed(PolicyKind::LinUcb, 5, 1.0, 5, 10).take_delta();
        let mut live = fed(PolicyKind::LinUcb, 5, 1.0, 6, 10);
        let before = live.clone().to_bytes();
        let epoch = live.begin_merge();
        let Stage::Arm(a) = live.stage_arm(epoch, "a", false) else {
            unreachable!("nothing invalidated the merge yet")
        };
        live.take_delta();
        assert!(matches!(
            live.stage_arm(epoch, "b", false),
            Stage::Invalidated
        ));
        let staged = vec![*a];
        assert!(live.commit_merge(epoch, staged).is_none());
        let shared = Mutex::new(live);
        merge_delta_shared(&shared, &delta, false).unwrap();
        let mut merged = shared.into_inner().unwrap();
        assert_ne!(merged.to_bytes(), before);
        assert_eq!(merged.local_version(), merged.version() - 1);
    }

    /// Threads updating while others merge end where one sequential process would.
    #[test]
    fn concurrent_updates_and_merges_lose_nothing() {
        let dim = 24;
        let deltas: Vec<Vec<u8>> = (0..6)
            .map(|s| fed(PolicyKind::LinUcb, dim, 1.0, 10 + s, 30).take_delta())
            .collect();
        let base = fed(PolicyKind::LinUcb, dim, 1.0, 7, 10);
        let shared = Mutex::new(base.clone());
        std::thread::scope(|s| {
            s.spawn(|| {
                for d in &deltas {
                    merge_delta_shared(&shared, d, false).unwrap();
                }
            });
            s.spawn(|| {
                for t in 0..300 {
                    let arm = if t % 2 == 0 { "a" } else { "b" };
                    shared.with(|b| b.update(arm, &x(dim, 1000 + t), 0.5, 1.0).unwrap());
                }
            });
        });
        let mut sequential = base;
        for d in &deltas {
            sequential.merge_delta(d).unwrap();
        }
        for t in 0..300 {
            let arm = if t % 2 == 0 { "a" } else { "b" };
            sequential.update(arm, &x(dim, 1000 + t), 0.5, 1.0).unwrap();
        }
        let got = shared.into_inner().unwrap();
        assert!(close(&thetas(&got), &thetas(&sequential)));
        for ((_, g), (_, w)) in got.arm_stats().iter().zip(sequential.arm_stats()) {
            assert_eq!(g.updates, w.updates);
            assert!((g.weight_sum - w.weight_sum).abs() < 1e-9);
            assert!((g.reward_sum - w.reward_sum).abs() < 1e-9);
        }
    }
}
