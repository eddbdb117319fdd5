//! Beta Thompson sampling with fractional rewards: α = α₀ + Σw·r, β = β₀ + Σw·(1−r).

use rand_distr::{Beta, Distribution};

use super::{argmax, mc_propensity, Ctx};
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let (a0, b0) = (ctx.cfg.prior_alpha, ctx.cfg.prior_beta);
    let params: Vec<(f64, f64)> = ctx
        .cand
        .iter()
        .map(|&i| {
            let s = &ctx.arms[i].sums;
            // Rounding can push Σw − Σw·r a hair below zero; the prior keeps both positive.
            let a = a0 + s.reward_sum.max(0.0);
            let b = b0 + (s.weight_sum - s.reward_sum).max(0.0);
            (a, b)
        })
        .collect();
    let dists: Vec<Beta<f64>> = params
        .iter()
        .map(|&(a, b)| Beta::new(a, b).unwrap_or_else(|_| Beta::new(1.0, 1.0).expect("valid")))
        .collect();
    let scores: Vec<f64> = dists.iter().map(|d| d.sample(&mut *ctx.rng)).collect();
    let pos = argmax(&scores);
    let n = scores.len();
    let propensity = if n == 1 {
        1.0
    } else {
        mc_propensity(pos, n, ctx.cfg.mc_samples, ctx.rng, |k, rng| {
            dists[k].sample(rng)
        })
    };
    let (a, b) = params[pos];
    let sd = (a * b / ((a + b) * (a + b) * (a + b + 1.0))).sqrt();
    ctx.choose(pos, &scores, propensity, sd)
}
