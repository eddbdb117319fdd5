//! Uniform random baseline: every candidate has score and propensity 1/K.

use rand::Rng;

use super::Ctx;
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let n = ctx.cand.len();
    let p = 1.0 / n as f64;
    let pos = ctx.rng.random_range(0..n);
    let scores = vec![p; n];
    let w = ctx.arms[ctx.cand[pos]].sums.weight_sum.max(0.0);
    ctx.choose(pos, &scores, p, 0.5 / (w + 1.0).sqrt())
}
