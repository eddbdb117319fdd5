//! Fixed-arm baseline: always `fixed_arm` when it is a candidate; when it is not allowed,
//! the first candidate (deterministic either way, so the propensity is 1).

use super::Ctx;
use crate::policy::Selection;

pub(crate) fn select(ctx: &mut Ctx<'_>) -> Selection {
    let target = ctx.cfg.fixed_arm.as_deref().unwrap_or("");
    let pos = ctx
        .cand
        .iter()
        .position(|&i| ctx.arms[i].name == target)
        .unwrap_or(0);
    let scores: Vec<f64> = (0..ctx.cand.len())
        .map(|k| if k == pos { 1.0 } else { 0.0 })
        .collect();
    let w = ctx.arms[ctx.cand[pos]].sums.weight_sum.max(0.0);
    ctx.choose(pos, &scores, 1.0, 0.5 / (w + 1.0).sqrt())
}
