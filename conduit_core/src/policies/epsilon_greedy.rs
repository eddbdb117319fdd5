//! ε-greedy: with probability ε a uniformly random candidate, otherwise the best smoothed
//! mean. The propensity is exact: (1 − ε)·[greedy] + ε/K.

use rand::Rng;

use super::{argmax, smoothed_mean, Ctx};
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let eps = ctx.cfg.epsilon;
    let scores: Vec<f64> = ctx
        .cand
        .iter()
        .map(|&i| smoothed_mean(&ctx.arms[i]))
        .collect();
    let greedy = argmax(&scores);
    let n = scores.len();
    let explore = ctx.rng.random::<f64>() < eps;
    let pos = if explore {
        ctx.rng.random_range(0..n)
    } else {
        greedy
    };
    let uniform = eps / n as f64;
    let propensity = if pos == greedy {
        1.0 - eps + uniform
    } else {
        uniform
    };
    let w = ctx.arms[ctx.cand[pos]].sums.weight_sum.max(0.0);
    ctx.choose(pos, &scores, propensity, 0.5 / (w + 1.0).sqrt())
}
