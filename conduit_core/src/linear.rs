//! Per-arm statistics of the linear policies (LinUCB, linear Thompson sampling):
//! `A = λI + Σ w·x·xᵀ` and `b = Σ w·r·x`, with `A⁻¹` kept by weighted Sherman–Morrison and
//! `θ = A⁻¹b` cached, both packed (see `kernels`).
//!
//! Three tricks keep the hot path at one read of `A⁻¹` (select) and one read plus one write
//! (update):
//! - the rank-1 terms for `A` are buffered and folded in `PENDING` at a time, so `A` (which
//!   only the exact re-factorisation, snapshots and merges read) costs one pass per batch;
//! - discounting is a lazy scalar: the true matrices are `scale·A` and `A⁻¹/scale`, so
//!   forgetting costs O(1) instead of a pass over both matrices. The scale shrinks the ridge
//!   too, so every exact re-factorisation puts the ridge back to `λI` (the prior is not an
//!   observation to forget), and one runs early once the ridge is down to `RIDGE_FLOOR·λ`:
//!   `A ⪰ RIDGE_FLOOR·λI` always, so `A⁻¹` stays bounded however long the run;
//! - from `LAZY_INV_MIN_DIM` on, the Sherman–Morrison corrections of `A⁻¹` are buffered too
//!   (`A⁻¹ = a_inv + Σ c_k·u_k·u_kᵀ`, at most `INV_PENDING` terms) and folded into `a_inv` and
//!   its f32 mirror in one pass: an update then reads `a_inv` once (for `u = A⁻¹x`) instead
//!   of reading it, then reading and writing it again, and the mirror write is amortised.
//!   Readers add the O(k·d) corrections; `θ` is still refreshed in O(d) from `u`.

use crate::error::{CoreError, CoreResult};
use crate::kernels::{
    axpy, dot, packed_len, packed_scaled_identity, quad_form, quad_form_mixed, rank1_update,
    rank1_update_mirrored, rank_k_update_mirrored, sym_matvec, MIRROR_MIN_DIM,
};
use crate::linalg::invert_spd_packed;

/// Rank-1 terms buffered before they are folded into `A` in one pass.
pub const PENDING: usize = 16;

// The rank-k kernel that folds them takes at most 16 terms.
const _: () = assert!(PENDING <= 16 && INV_PENDING <= 16);

/// Sherman–Morrison corrections of `A⁻¹` buffered before they are folded in one pass.
pub const INV_PENDING: usize = 8;

/// Dimension from which `A⁻¹`'s corrections are buffered: the arms whose selection reads the
/// f32 mirror, where memory traffic is most of an update. Below it every correction is
/// applied at once (and the flat selection path reads `a_inv` directly).
pub const LAZY_INV_MIN_DIM: usize = MIRROR_MIN_DIM;

/// Below this Sherman–Morrison denominator `1 + w·xᵀA⁻¹x` a downdate loses too many digits;
/// the arm is then re-factorised exactly from `A` instead.
const MIN_SM_DENOMINATOR: f64 = 1e-2;

/// Smallest fraction of the ridge that discounting may leave before an exact
/// re-factorisation restores it (and folds the lazy scale). Without it a direction the recent
/// observations never touch keeps only `discount^n·λ`: its width grows without bound and
/// `A⁻¹` eventually overflows. 1e-3 keeps such a width within 32x of the prior's, and at
/// `discount = 0.99` re-factorises every 688 updates, near the default period of 1000.
pub const RIDGE_FLOOR: f64 = 1e-3;

/// A linear arm's sufficient statistics and the caches derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearStats {
    pub(crate) dim: usize,
    /// Stored `A` (packed); the true matrix is `scale * a` plus the pending terms.
    pub(crate) a: Vec<f64>,
    /// Stored `A⁻¹` (packed); the true inverse is `a_inv / scale`.
    pub(crate) a_inv: Vec<f64>,
    /// f32 copy of `a_inv` read by selection when `dim >= MIRROR_MIN_DIM` (empty otherwise);
    /// derived, so never serialised.
    pub(crate) a_inv_f32: Vec<f32>,
    pub(crate) b: Vec<f64>,
    pub(crate) theta: Vec<f64>,
    pub(crate) scale: f64,
    /// λ: the stored `a` holds `λI` plus the observations, so the true ridge is `scale·λ`
    /// until [`Self::refactor`] or [`Self::merge`] restores it. From the config; not serialised.
    pub(crate) ridge: f64,
    /// Sherman–Morrison steps since the last exact factorisation.
    pub(crate) since_refactor: u64,
    /// Buffered rank-1 terms for `a`: weights already divided by `scale`, vectors row-major.
    pub(crate) pending_w: Vec<f64>,
    pub(crate) pending_x: Vec<f64>,
    /// The same buffered terms with their raw (unscaled) weights, for an explicit delta.
    pub(crate) pending_raw: Vec<f64>,
    /// Buffered corrections of `a_inv` (stored units): coefficients and vectors, row-major.
    /// Empty below `LAZY_INV_MIN_DIM`; never serialised (snapshots fold them first).
    pub(crate) inv_pending_c: Vec<f64>,
    pub(crate) inv_pending_u: Vec<f64>,
    /// Whether `delta_xx` is tracked term by term. Without discounting it is not: the local
    /// `Σ dw·x·xᵀ` since the last take is `A − delta_base`, which saves a matrix pass per
    /// update. With discounting `A` decays, so the undiscounted sum is tracked explicitly.
    pub(crate) explicit_delta: bool,
    /// Explicit: `Σ dw·x·xᵀ` since the last take. Otherwise: `A` at the last take plus every
    /// delta merged since (packed).
    pub(crate) delta_base: Vec<f64>,
    /// `Σ c·x` applied locally since the last `take_delta`.
    pub(crate) delta_rx: Vec<f64>,
}

impl LinearStats {
    /// Fresh statistics: `A = ridge·I`, `b = 0`.
    pub fn new(dim: usize, ridge: f64, explicit_delta: bool) -> Self {
        let a = packed_scaled_identity(dim, ridge);
        let delta_base = if explicit_delta {
            vec![0.0; packed_len(dim)]
        } else {
            a.clone()
        };
        let mut stats = LinearStats {
            dim,
            a,
            a_inv_f32: Vec::new(),
            a_inv: packed_scaled_identity(dim, 1.0 / ridge),
            b: vec![0.0; dim],
            theta: vec![0.0; dim],
            scale: 1.0,
            ridge,
            since_refactor: 0,
            pending_w: Vec::with_capacity(PENDING),
            pending_x: Vec::with_capacity(PENDING * dim),
            pending_raw: Vec::with_capacity(PENDING),
            inv_pending_c: Vec::new(),
            inv_pending_u: Vec::new(),
            explicit_delta,
            delta_base,
            delta_rx: vec![0.0; dim],
        };
        stats.refresh_mirror();
        stats
    }

    /// Rebuilds the f32 selection mirror of `A⁻¹` (a no-op below `MIRROR_MIN_DIM`).
    pub(crate) fn refresh_mirror(&mut self) {
        if self.dim >= MIRROR_MIN_DIM {
            self.a_inv_f32.clear();
            self.a_inv_f32.extend(self.a_inv.iter().map(|v| *v as f32));
        }
    }

    /// `θᵀx`, the posterior mean of the arm's reward at `x`.
    #[inline]
    pub fn mean(&self, x: &[f64]) -> f64 {
        dot(&self.theta, x)
    }

    /// `xᵀA⁻¹x`, the squared posterior width at `x` (before any exploration multiplier).
    #[inline]
    pub fn width_sq(&self, x: &[f64]) -> f64 {
        let mut q = if self.a_inv_f32.is_empty() {
            quad_form(&self.a_inv, x)
        } else {
            quad_form_mixed(&self.a_inv_f32, x)
        };
        for (k, c) in self.inv_pending_c.iter().enumerate() {
            let ux = dot(self.pending_vec(k), x);
            q += c * ux * ux;
        }
        (q / self.scale).max(0.0)
    }

    fn pending_vec(&self, k: usize) -> &[f64] {
        &self.inv_pending_u[k * self.dim..(k + 1) * self.dim]
    }

    /// `u = (stored A⁻¹)·x`, buffered corrections included.
    fn inv_matvec(&self, x: &[f64], u: &mut [f64]) {
        sym_matvec(&self.a_inv, x, u);
        for (k, c) in self.inv_pending_c.iter().enumerate() {
            let uk = self.pending_vec(k);
            axpy(c * dot(uk, x), uk, u);
        }
    }

    /// Folds the buffered corrections into `a_inv` and its mirror in one pass.
    fn fold_inverse(&mut self) {
        if self.inv_pending_c.is_empty() {
            return;
        }
        rank_k_update_mirrored(
            &mut self.a_inv,
            &mut self.a_inv_f32,
            &self.inv_pending_c,
            &self.inv_pending_u,
        );
        self.inv_pending_c.clear();
        self.inv_pending_u.clear();
    }

    /// Whether selection reads the f32 mirror (from `MIRROR_MIN_DIM` on) rather than `a_inv`.
    #[inline]
    pub(crate) fn selects_from_mirror(&self) -> bool {
        !self.a_inv_f32.is_empty()
    }

    /// `xᵀA⁻¹x` given `q = xᵀMx` for the stored matrix selection reads (`a_inv` or its mirror): the buffered
    /// corrections added and the lazy scale applied.
    #[inline]
    pub(crate) fn width_sq_from(&self, q: f64, x: &[f64]) -> f64 {
        let mut q = q;
        for (k, c) in self.inv_pending_c.iter().enumerate() {
            let ux = dot(self.pending_vec(k), x);
            q += c * ux * ux;
        }
        (q / self.scale).max(0.0)
    }

    /// The cached `θ`.
    pub fn theta(&self) -> &[f64] {
        &self.theta
    }

    /// Multiplies every statistic by `gamma` (exponential forgetting) in O(d).
    pub fn discount(&mut self, gamma: f64) {
        if gamma == 1.0 {
            return;
        }
        self.scale *= gamma;
        for v in &mut self.b {
            *v *= gamma;
        }
        // θ = (γA)⁻¹(γb) is unchanged.
        if self.scale < RIDGE_FLOOR {
            self.refactor();
        }
    }

    /// Checks that adding `dw·x·xᵀ` keeps `A` positive definite, without changing anything.
    /// Only a negative `dw` (a downdate) can fail.
    pub fn check_rank1(&self, x: &[f64], dw: f64, scratch: &mut [f64]) -> CoreResult<()> {
        if dw >= 0.0 {
            return Ok(());
        }
        self.inv_matvec(x, &mut scratch[..self.dim]);
        let q = dot(x, &scratch[..self.dim]) / self.scale;
        if 1.0 + dw * q <= 0.0 {
            return Err(CoreError::invalid(
                "old_weight",
                "removing this observation would leave the arm's matrix singular: \
                 the old (reward, weight) was never applied to this arm",
            ));
        }
        Ok(())
    }

    /// `A += dw·x·xᵀ`, `b += c·x`, keeping `A⁻¹` and `θ` in step. `u` is scratch of length d.
    /// The caller has validated the inputs (and, for `dw < 0`, called [`Self::check_rank1`]).
    pub fn apply(&mut self, x: &[f64], dw: f64, c: f64, refactor_every: u64, u: &mut [f64]) {
        let d = self.dim;
        let u = &mut u[..d];
        if dw != 0.0 {
            let w_st = dw / self.scale;
            self.inv_matvec(x, u);
            let q_st = dot(x, u);
            let denom = 1.0 + w_st * q_st;
            let x_theta = dot(x, &self.theta);
            self.push_pending(w_st, dw, x);
            axpy(c, x, &mut self.b);
            axpy(c, x, &mut self.delta_rx);
            if denom < MIN_SM_DENOMINATOR || !denom.is_finite() {
                self.refactor();
                return;
            }
            if d >= LAZY_INV_MIN_DIM {
                self.inv_pending_c.push(-w_st / denom);
                self.inv_pending_u.extend_from_slice(u);
                if self.inv_pending_c.len() >= INV_PENDING {
                    self.fold_inverse();
                }
            } else if self.a_inv_f32.is_empty() {
                rank1_update(&mut self.a_inv, -w_st / denom, u);
            } else {
                rank1_update_mirrored(&mut self.a_inv, &mut self.a_inv_f32, -w_st / denom, u);
            }
            // θ' = θ + A⁻¹x (c − dw·xᵀθ) / (1 + dw·xᵀA⁻¹x), with A⁻¹x = u / scale.
            let step = (c - dw * x_theta) / (denom * self.scale);
            axpy(step, u, &mut self.theta);
            self.since_refactor += 1;
            if self.since_refactor >= refactor_every {
                self.refactor();
            }
        } else if c != 0.0 {
            axpy(c, x, &mut self.b);
            axpy(c, x, &mut self.delta_rx);
            self.inv_matvec(x, u);
            axpy(c / self.scale, u, &mut self.theta);
        }
    }

    fn push_pending(&mut self, w_st: f64, dw: f64, x: &[f64]) {
        self.pending_w.push(w_st);
        self.pending_raw.push(dw);
        self.pending_x.extend_from_slice(x);
        if self.pending_w.len() >= PENDING {
            self.flush();
        }
    }

    /// Folds the buffered rank-1 terms into `a` (and an explicit delta) and the buffered
    /// corrections into `a_inv`, one pass each.
    pub fn flush(&mut self) {
        self.fold_inverse();
        if self.pending_w.is_empty() {
            return;
        }
        // One pass over `a` for all the buffered terms (each chunk loaded and stored once).
        rank_k_update_mirrored(&mut self.a, &mut [], &self.pending_w, &self.pending_x);
        if self.explicit_delta {
            rank_k_update_mirrored(
                &mut self.delta_base,
                &mut [],
                &self.pending_raw,
                &self.pending_x,
            );
        }
        self.pending_w.clear();
        self.pending_raw.clear();
        self.pending_x.clear();
    }

    /// Folds the lazy scale into `a` and `a_inv` and puts the discounted ridge back: the true
    /// `A` gains `(1 − scale)·λI`. `a_inv` is then stale when `scale < 1`, so only callers
    /// that re-factorise right after use this (a no-op without discounting).
    fn fold_scale_restoring_ridge(&mut self) {
        self.flush();
        let s = self.scale;
        if s == 1.0 {
            return;
        }
        for v in &mut self.a {
            *v *= s;
        }
        let restore = (1.0 - s) * self.ridge;
        for i in 0..self.dim {
            self.a[crate::kernels::row_start(self.dim, i)] += restore;
        }
        for v in &mut self.a_inv {
            *v /= s;
        }
        self.scale = 1.0;
        self.refresh_mirror();
    }

    /// The true `A` (packed), pending terms folded in.
    pub fn a_matrix(&mut self) -> Vec<f64> {
        self.flush();
        let s = self.scale;
        self.a.iter().map(|v| v * s).collect()
    }

    /// The true `A⁻¹` (packed), buffered corrections included.
    pub fn a_inv_matrix(&self) -> Vec<f64> {
        let mut m = self.a_inv.clone();
        for (k, c) in self.inv_pending_c.iter().enumerate() {
            rank1_update(&mut m, *c, self.pending_vec(k));
        }
        let s = self.scale;
        m.iter().map(|v| v / s).collect()
    }

    /// The true `b`.
    pub fn b(&self) -> &[f64] {
        &self.b
    }

    /// Exact re-factorisation: `A⁻¹` recomputed from `A` by Cholesky, `θ = A⁻¹b`; with
    /// discounting, the ridge is restored to `λI` first.
    pub fn refactor(&mut self) {
        self.fold_scale_restoring_ridge();
        // `A ⪰ λI` always holds for consistent bookkeeping, so the factorisation succeeds;
        // if rounding ever made it fail, the Sherman–Morrison inverse is kept (the inverse
        // of the matrix before the ridge was restored: wider, never narrower).
        if let Some(inv) = invert_spd_packed(&self.a, self.dim) {
            self.a_inv = inv;
            self.refresh_mirror();
            self.refresh_theta();
        }
        self.since_refactor = 0;
    }

    pub(crate) fn refresh_theta(&mut self) {
        let mut theta = vec![0.0; self.dim];
        sym_matvec(&self.a_inv, &self.b, &mut theta);
        let s = self.scale;
        for v in &mut theta {
            *v /= s;
        }
        self.theta = theta;
    }

    /// Number of packed entries per matrix (for snapshots).
    pub fn packed_len(&self) -> usize {
        packed_len(self.dim)
    }
}
