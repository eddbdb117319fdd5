//! Disjoint LinUCB: score = θᵀx + α·sqrt(xᵀA⁻¹x); deterministic argmax.

use super::{argmax, Ctx};
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let alpha = ctx.cfg.alpha;
    let (means, widths) = ctx.linear_parts();
    let scores: Vec<f64> = means
        .iter()
        .zip(&widths)
        .map(|(m, w)| m + alpha * w)
        .collect();
    let pos = argmax(&scores);
    ctx.choose(pos, &scores, 1.0, widths[pos])
}
