//! Disjoint LinUCB: score = θᵀx + α·sqrt(xᵀA⁻¹x); argmax, exact ties broken uniformly by the
//! seeded stream (propensity 1/ties).

use super::{argmax_random_tie, Ctx};
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let alpha = ctx.cfg.alpha;
    let (means, widths) = ctx.linear_parts();
    let scores: Vec<f64> = means
        .iter()
        .zip(&widths)
        .map(|(m, w)| m + alpha * w)
        .collect();
    let (pos, ties) = argmax_random_tie(&scores, ctx.rng);
    ctx.choose(pos, &scores, 1.0 / ties as f64, widths[pos])
}
