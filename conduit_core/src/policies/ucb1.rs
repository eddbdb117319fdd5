//! UCB1 on weighted sums: score = mean + α·sqrt(2·ln(N + 2) / (n + 1)), where n is the arm's
//! Σw, N the candidates' total Σw, and the +1/+2 are one pseudo-observation per arm so a
//! fresh arm has a large but finite score. Exact ties (e.g. every arm unseen) are broken
//! uniformly by the seeded stream, propensity 1/ties.

use super::{argmax_random_tie, smoothed_mean, Ctx};
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let alpha = ctx.cfg.alpha;
    let total: f64 = ctx
        .cand
        .iter()
        .map(|&i| ctx.arms[i].sums.weight_sum.max(0.0))
        .sum();
    let log_term = 2.0 * (total + 2.0).ln();
    let mut scores = Vec::with_capacity(ctx.cand.len());
    let mut bonuses = Vec::with_capacity(ctx.cand.len());
    for &i in ctx.cand {
        let arm = &ctx.arms[i];
        let bonus = (log_term / (arm.sums.weight_sum.max(0.0) + 1.0)).sqrt();
        scores.push(smoothed_mean(arm) + alpha * bonus);
        bonuses.push(bonus);
    }
    let (pos, ties) = argmax_random_tie(&scores, ctx.rng);
    ctx.choose(pos, &scores, 1.0 / ties as f64, bonuses[pos])
}
