//! ε-greedy: with probability ε a uniformly random candidate, otherwise the best smoothed
//! mean, exact ties among the best broken uniformly. The propensity is exact:
//! (1 − ε)·[arm among the m tied best]/m + ε/K.

use rand::Rng;

use super::{argmax, count_ties, nth_tie, smoothed_mean, Ctx};
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let eps = ctx.cfg.epsilon;
    let scores: Vec<f64> = ctx
        .cand
        .iter()
        .map(|&i| smoothed_mean(&ctx.arms[i]))
        .collect();
    let n = scores.len();
    let best = argmax(&scores);
    let ties = count_ties(&scores, best);
    let explore = ctx.rng.random::<f64>() < eps;
    let pos = if explore {
        ctx.rng.random_range(0..n)
    } else if ties == 1 {
        best
    } else {
        nth_tie(&scores, best, ctx.rng.random_range(0..ties))
    };
    let uniform = eps / n as f64;
    let propensity = if scores[pos] == scores[best] {
        (1.0 - eps) / ties as f64 + uniform
    } else {
        uniform
    };
    let w = ctx.arms[ctx.cand[pos]].sums.weight_sum.max(0.0);
    ctx.choose(pos, &scores, propensity, 0.5 / (w + 1.0).sqrt())
}
