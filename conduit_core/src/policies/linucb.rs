//! Disjoint LinUCB: score = θᵀx + α·sqrt(xᵀA⁻¹x); deterministic argmax.

use super::{argmax, Ctx};
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let alpha = ctx.cfg.alpha;
    let mut scores = Vec::with_capacity(ctx.cand.len());
    let mut widths = Vec::with_capacity(ctx.cand.len());
    for &i in ctx.cand {
        let lin = ctx.arms[i]
            .linear
            .as_ref()
            .expect("linear policy has linear arms");
        let width = lin.width_sq(ctx.x).sqrt();
        scores.push(lin.mean(ctx.x) + alpha * width);
        widths.push(width);
    }
    let pos = argmax(&scores);
    ctx.choose(pos, &scores, 1.0, widths[pos])
}
