//! The selection rules, one file each, and what they share: the candidate set, the
//! argmax (exact ties broken by the seeded stream) and the Monte-Carlo propensity estimate.

mod beta_ts;
mod epsilon_greedy;
mod fixed;
mod lin_ts;
mod linucb;
mod random;
mod ucb1;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::arm::Arm;
use crate::kernels::{packed_len, quad_forms, quad_forms_mixed};
use crate::linear::LinearStats;
use crate::parallel;
use crate::policy::{PolicyConfig, PolicyKind, Selection};

/// Stored entries (over all candidates) from which the quadratic forms of a selection are
/// split between two cores: 2^20 f32 entries are 4 MiB, one core's L2, beyond which a single
/// core streams the inverses from L3 (d = 386 from 15 arms on). Far below it the hand-off
/// to the helper thread would cost more than it saves.
const SPLIT_MIN_ENTRIES: usize = 1 << 20;

/// What a selection rule sees: the candidate arms (indices into `arms`, never empty) and `x`.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a PolicyConfig,
    pub arms: &'a [Arm],
    pub cand: &'a [usize],
    pub x: &'a [f64],
    pub rng: &'a mut ChaCha8Rng,
}

impl Ctx<'_> {
    /// `(offset + θᵀx, sqrt(xᵀA⁻¹x))` of every candidate of a linear policy.
    pub fn linear_parts(&mut self) -> (Vec<f64>, Vec<f64>) {
        let arms = self.arms;
        let lin = |i: usize| -> &LinearStats {
            arms[i]
                .linear
                .as_ref()
                .expect("linear policy has linear arms")
        };
        let x = self.x;
        let n = self.cand.len();
        let mut widths = vec![0.0; n];
        // Every arm has the same dimension, so they all read the same kind of matrix.
        if lin(self.cand[0]).selects_from_mirror() {
            let ms: Vec<&[f32]> = self.cand.iter().map(|&i| &lin(i).a_inv_f32[..]).collect();
            if n * packed_len(x.len()) >= SPLIT_MIN_ENTRIES {
                // Two fixed halves: the same arms go to the same core from one selection to
                // the next, so each core's L2 keeps its half.
                let h = n / 2;
                let (lo, hi) = widths.split_at_mut(h);
                let (ms_lo, ms_hi) = ms.split_at(h);
                parallel::join(
                    || quad_forms_mixed(ms_lo, x, lo),
                    || quad_forms_mixed(ms_hi, x, hi),
                );
            } else {
                quad_forms_mixed(&ms, x, &mut widths);
            }
        } else {
            let ms: Vec<&[f64]> = self.cand.iter().map(|&i| &lin(i).a_inv[..]).collect();
            quad_forms(&ms, x, &mut widths);
        }
        let mut means = Vec::with_capacity(n);
        for (&i, w) in self.cand.iter().zip(widths.iter_mut()) {
            let l = lin(i);
            means.push(self.cfg.reward_offset + l.mean(x));
            *w = l.width_sq_from(*w, x).sqrt();
        }
        (means, widths)
    }

    /// Builds the `Selection` for candidate position `pos`.
    pub fn choose(
        &self,
        pos: usize,
        scores: &[f64],
        propensity: f64,
        uncertainty: f64,
    ) -> Selection {
        Selection {
            arm: self.cand[pos],
            scores: self
                .cand
                .iter()
                .copied()
                .zip(scores.iter().copied())
                .collect(),
            propensity,
            uncertainty: uncertainty.max(0.0),
        }
    }
}

/// Position of the largest score; ties go to the earliest candidate. Used where exact ties
/// have probability zero (Thompson draws), so no random number is spent on them.
pub(crate) fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate().skip(1) {
        if *s > scores[best] {
            best = i;
        }
    }
    best
}

/// Number of positions whose score equals the largest one exactly.
pub(crate) fn count_ties(scores: &[f64], best: usize) -> usize {
    let top = scores[best];
    scores.iter().filter(|s| **s == top).count()
}

/// The `k`-th (0-based) position whose score equals `scores[best]`.
pub(crate) fn nth_tie(scores: &[f64], best: usize, k: usize) -> usize {
    let top = scores[best];
    scores
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == top)
        .nth(k)
        .map_or(best, |(i, _)| i)
}

/// Position of the largest score for a deterministic rule, with exact ties (every arm at a
/// cold start, arms never updated) broken uniformly by the policy's seeded stream, and the
/// number of tied positions: the honest logging propensity of the choice is 1/ties. A random
/// number is drawn only when there is a tie, so tie-free decisions consume none.
pub(crate) fn argmax_random_tie(scores: &[f64], rng: &mut ChaCha8Rng) -> (usize, usize) {
    let best = argmax(scores);
    let ties = count_ties(scores, best);
    if ties == 1 {
        return (best, 1);
    }
    (nth_tie(scores, best, rng.random_range(0..ties)), ties)
}

/// Seeded Monte-Carlo estimate of the probability that a fresh draw of every candidate's
/// score picks position `chosen`. The decision actually taken counts as one of the draws, so
/// the estimate is never 0 for the arm that was chosen.
pub(crate) fn mc_propensity(
    chosen: usize,
    n_cand: usize,
    samples: u32,
    rng: &mut ChaCha8Rng,
    mut draw: impl FnMut(usize, &mut ChaCha8Rng) -> f64,
) -> f64 {
    let mut wins: u64 = 1;
    for _ in 0..samples {
        let mut best = 0;
        let mut best_score = f64::NEG_INFINITY;
        for k in 0..n_cand {
            let s = draw(k, rng);
            if s > best_score {
                best = k;
                best_score = s;
            }
        }
        wins += u64::from(best == chosen);
    }
    wins as f64 / (f64::from(samples) + 1.0)
}

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    match ctx.cfg.kind {
        PolicyKind::LinUcb => linucb::select(ctx),
        PolicyKind::LinTs => lin_ts::select(ctx),
        PolicyKind::BetaTs => beta_ts::select(ctx),
        PolicyKind::Ucb1 => ucb1::select(ctx),
        PolicyKind::EpsilonGreedy => epsilon_greedy::select(ctx),
        PolicyKind::Random => random::select(ctx),
        PolicyKind::Fixed => fixed::select(ctx),
    }
}

/// Mean reward of a scalar arm with one pseudo-observation at 1/2, so an arm never seen
/// still has a finite, neutral score.
pub(crate) fn smoothed_mean(arm: &Arm) -> f64 {
    ((arm.sums.reward_sum + 0.5) / (arm.sums.weight_sum + 1.0)).clamp(0.0, 1.0)
}
