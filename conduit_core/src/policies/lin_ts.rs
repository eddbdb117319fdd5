//! Linear Thompson sampling with disjoint arms.
//!
//! For θ ~ N(θ̂, v²A⁻¹), the score θᵀx is exactly the scalar N(θ̂ᵀx, v²·xᵀA⁻¹x). Sampling it
//! needs only the quadratic form LinUCB already computes: no O(d³) factor per query, and the
//! Monte-Carlo propensity is `mc_samples` scalar draws per candidate.

use rand_distr::{Distribution, StandardNormal};

use super::{argmax, mc_propensity, Ctx};
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let v = ctx.cfg.ts_scale;
    let n = ctx.cand.len();
    let (means, sds) = ctx.linear_parts();
    let scores: Vec<f64> = (0..n)
        .map(|k| {
            let z: f64 = StandardNormal.sample(&mut *ctx.rng);
            means[k] + v * sds[k] * z
        })
        .collect();
    let pos = argmax(&scores);
    let propensity = if n == 1 {
        1.0
    } else {
        mc_propensity(pos, n, ctx.cfg.mc_samples, ctx.rng, |k, rng| {
            let z: f64 = StandardNormal.sample(rng);
            means[k] + v * sds[k] * z
        })
    };
    ctx.choose(pos, &scores, propensity, sds[pos])
}
