//! AVX2+FMA kernels; every function requires those CPU features, which the dispatchers in
//! `kernels` check before any call.

use std::arch::x86_64::*;

mod quad;
pub use quad::{quad_many, quad_mixed_many};

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256d) -> f64 {
    let lo = _mm256_castpd256_pd128(v);
    let hi = _mm256_extractf128_pd::<1>(v);
    let s = _mm_add_pd(lo, hi);
    let h = _mm_unpackhi_pd(s, s);
    _mm_cvtsd_f64(_mm_add_sd(s, h))
}

/// Lane masks for the last 0..=3 elements: the tail is a masked load instead of a
/// scalar loop whose varying trip count (rows of a packed matrix shrink by one each)
/// would cost a branch misprediction per row.
static TAIL_MASKS: [[i64; 4]; 4] = [[0, 0, 0, 0], [-1, 0, 0, 0], [-1, -1, 0, 0], [-1, -1, -1, 0]];

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tail_mask(rem: usize) -> __m256i {
    _mm256_loadu_si256(TAIL_MASKS[rem].as_ptr().cast())
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_pd();
    let mut acc1 = _mm256_setzero_pd();
    let mut i = 0;
    // Four independent sums hide the FMA latency on long (flat) dot products.
    let mut acc2 = _mm256_setzero_pd();
    let mut acc3 = _mm256_setzero_pd();
    while i + 16 <= n {
        acc0 = _mm256_fmadd_pd(_mm256_loadu_pd(pa.add(i)), _mm256_loadu_pd(pb.add(i)), acc0);
        acc1 = _mm256_fmadd_pd(
            _mm256_loadu_pd(pa.add(i + 4)),
            _mm256_loadu_pd(pb.add(i + 4)),
            acc1,
        );
        acc2 = _mm256_fmadd_pd(
            _mm256_loadu_pd(pa.add(i + 8)),
            _mm256_loadu_pd(pb.add(i + 8)),
            acc2,
        );
        acc3 = _mm256_fmadd_pd(
            _mm256_loadu_pd(pa.add(i + 12)),
            _mm256_loadu_pd(pb.add(i + 12)),
            acc3,
        );
        i += 16;
    }
    acc0 = _mm256_add_pd(acc0, acc2);
    acc1 = _mm256_add_pd(acc1, acc3);
    while i + 8 <= n {
        acc0 = _mm256_fmadd_pd(_mm256_loadu_pd(pa.add(i)), _mm256_loadu_pd(pb.add(i)), acc0);
        acc1 = _mm256_fmadd_pd(
            _mm256_loadu_pd(pa.add(i + 4)),
            _mm256_loadu_pd(pb.add(i + 4)),
            acc1,
        );
        i += 8;
    }
    if i + 4 <= n {
        acc0 = _mm256_fmadd_pd(_mm256_loadu_pd(pa.add(i)), _mm256_loadu_pd(pb.add(i)), acc0);
        i += 4;
    }
    // Masked lanes are neither read nor faulted on.
    let m = tail_mask(n - i);
    let ta = _mm256_maskload_pd(pa.add(i), m);
    let tb = _mm256_maskload_pd(pb.add(i), m);
    acc1 = _mm256_fmadd_pd(ta, tb, acc1);
    hsum(_mm256_add_pd(acc0, acc1))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    let n = x.len().min(y.len());
    axpy_raw(_mm256_set1_pd(alpha), x.as_ptr(), y.as_mut_ptr(), n);
}

/// `y[..n] += va·x[..n]` with a masked tail; the body of `axpy` and of each `rank1` row.
#[inline(always)]
unsafe fn axpy_raw(va: __m256d, px: *const f64, py: *mut f64, n: usize) {
    let mut i = 0;
    while i + 4 <= n {
        let r = _mm256_fmadd_pd(va, _mm256_loadu_pd(px.add(i)), _mm256_loadu_pd(py.add(i)));
        _mm256_storeu_pd(py.add(i), r);
        i += 4;
    }
    if i < n {
        let m = tail_mask(n - i);
        let r = _mm256_fmadd_pd(
            va,
            _mm256_maskload_pd(px.add(i), m),
            _mm256_maskload_pd(py.add(i), m),
        );
        _mm256_maskstore_pd(py.add(i), m, r);
    }
}

#[target_feature(enable = "avx2,fma")]
pub unsafe fn quad(m: &[f64], x: &[f64]) -> f64 {
    let dim = x.len();
    let mut total = 0.0;
    let mut off = 0;
    for i in 0..dim {
        let row = &m[off..off + dim - i];
        let off_diag = dot(&row[1..], &x[i + 1..]);
        total += x[i] * (row[0] * x[i] + 2.0 * off_diag);
        off += dim - i;
    }
    total
}

/// `y = M x`, four rows at a time: each 4-wide chunk of `y` beyond the block is loaded and
/// stored once for the four rows, on the same 4-aligned grid from block to block, so every
/// load of `y` is forwarded from one earlier store instead of straddling two (a stall per
/// chunk when rows are walked one at a time, shifting the grid by one lane per row).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matvec(m: &[f64], x: &[f64], y: &mut [f64]) {
    let dim = x.len();
    assert!(m.len() >= dim * (dim + 1) / 2 && y.len() >= dim);
    y[..dim].fill(0.0);
    let (pm, px, py) = (m.as_ptr(), x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    let mut off = 0;
    while i + 4 <= dim {
        let r0 = pm.add(off);
        let r1 = r0.add(dim - i);
        let r2 = r1.add(dim - i - 1);
        let r3 = r2.add(dim - i - 2);
        let rows = [r0, r1, r2, r3];
        let xs = [*px.add(i), *px.add(i + 1), *px.add(i + 2), *px.add(i + 3)];
        // The 4x4 upper corner of the block, scalar.
        let mut yc = [0.0f64; 4];
        for r in 0..4 {
            yc[r] = (*rows[r]).mul_add(xs[r], yc[r]);
            for c in r + 1..4 {
                let a = *rows[r].add(c - r);
                yc[r] = a.mul_add(xs[c], yc[r]);
                yc[c] = a.mul_add(xs[r], yc[c]);
            }
        }
        // Columns from i + 4 on: entry (i + r, j) is at rows[r] + (j - i - r).
        let (b0, b1, b2, b3) = (r0.add(4), r1.add(3), r2.add(2), r3.add(1));
        let (x0, x1, x2, x3) = (
            _mm256_set1_pd(xs[0]),
            _mm256_set1_pd(xs[1]),
            _mm256_set1_pd(xs[2]),
            _mm256_set1_pd(xs[3]),
        );
        let mut s = [_mm256_setzero_pd(); 4];
        let len = dim - i - 4;
        let (pxj, pyj) = (px.add(i + 4), py.add(i + 4));
        let mut j = 0;
        while j + 4 <= len {
            let xv = _mm256_loadu_pd(pxj.add(j));
            let (a0, a1, a2, a3) = (
                _mm256_loadu_pd(b0.add(j)),
                _mm256_loadu_pd(b1.add(j)),
                _mm256_loadu_pd(b2.add(j)),
                _mm256_loadu_pd(b3.add(j)),
            );
            s[0] = _mm256_fmadd_pd(a0, xv, s[0]);
            s[1] = _mm256_fmadd_pd(a1, xv, s[1]);
            s[2] = _mm256_fmadd_pd(a2, xv, s[2]);
            s[3] = _mm256_fmadd_pd(a3, xv, s[3]);
            let mut yv = _mm256_loadu_pd(pyj.add(j));
            yv = _mm256_fmadd_pd(a0, x0, yv);
            yv = _mm256_fmadd_pd(a1, x1, yv);
            yv = _mm256_fmadd_pd(a2, x2, yv);
            yv = _mm256_fmadd_pd(a3, x3, yv);
            _mm256_storeu_pd(pyj.add(j), yv);
            j += 4;
        }
        if j < len {
            let mk = tail_mask(len - j);
            let xv = _mm256_maskload_pd(pxj.add(j), mk);
            let (a0, a1, a2, a3) = (
                _mm256_maskload_pd(b0.add(j), mk),
                _mm256_maskload_pd(b1.add(j), mk),
                _mm256_maskload_pd(b2.add(j), mk),
                _mm256_maskload_pd(b3.add(j), mk),
            );
            s[0] = _mm256_fmadd_pd(a0, xv, s[0]);
            s[1] = _mm256_fmadd_pd(a1, xv, s[1]);
            s[2] = _mm256_fmadd_pd(a2, xv, s[2]);
            s[3] = _mm256_fmadd_pd(a3, xv, s[3]);
            let mut yv = _mm256_maskload_pd(pyj.add(j), mk);
            yv = _mm256_fmadd_pd(a0, x0, yv);
            yv = _mm256_fmadd_pd(a1, x1, yv);
            yv = _mm256_fmadd_pd(a2, x2, yv);
            yv = _mm256_fmadd_pd(a3, x3, yv);
            _mm256_maskstore_pd(pyj.add(j), mk, yv);
        }
        for r in 0..4 {
            *py.add(i + r) += yc[r] + hsum(s[r]);
        }
        off += 4 * (dim - i) - 6;
        i += 4;
    }
    // The last dim % 4 rows are at most three entries long.
    while i < dim {
        let row = pm.add(off);
        let len = dim - i;
        let xi = *px.add(i);
        let mut yi = *py.add(i) + *row * xi;
        for j in 1..len {
            let a = *row.add(j);
            yi = a.mul_add(*px.add(i + j), yi);
            *py.add(i + j) = a.mul_add(xi, *py.add(i + j));
        }
        *py.add(i) = yi;
        off += len;
        i += 1;
    }
}

static TAIL_MASKS_32: [[i32; 4]; 4] =
    [[0, 0, 0, 0], [-1, 0, 0, 0], [-1, -1, 0, 0], [-1, -1, -1, 0]];

/// `Σ a[i]·b[i]` with `a` stored as f32 and every product and sum in f64.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_mixed(a: &[f32], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_pd();
    let mut acc1 = _mm256_setzero_pd();
    let mut i = 0;
    while i + 8 <= n {
        let a0 = _mm256_cvtps_pd(_mm_loadu_ps(pa.add(i)));
        let a1 = _mm256_cvtps_pd(_mm_loadu_ps(pa.add(i + 4)));
        acc0 = _mm256_fmadd_pd(a0, _mm256_loadu_pd(pb.add(i)), acc0);
        acc1 = _mm256_fmadd_pd(a1, _mm256_loadu_pd(pb.add(i + 4)), acc1);
        i += 8;
    }
    if i + 4 <= n {
        let a0 = _mm256_cvtps_pd(_mm_loadu_ps(pa.add(i)));
        acc0 = _mm256_fmadd_pd(a0, _mm256_loadu_pd(pb.add(i)), acc0);
        i += 4;
    }
    let rem = n - i;
    let m32 = _mm_loadu_si128(TAIL_MASKS_32[rem].as_ptr().cast());
    let ta = _mm256_cvtps_pd(_mm_maskload_ps(pa.add(i), m32));
    let tb = _mm256_maskload_pd(pb.add(i), tail_mask(rem));
    acc1 = _mm256_fmadd_pd(ta, tb, acc1);
    hsum(_mm256_add_pd(acc0, acc1))
}

#[target_feature(enable = "avx2,fma")]
pub unsafe fn quad_mixed(m: &[f32], x: &[f64]) -> f64 {
    let dim = x.len();
    let mut total = 0.0;
    let mut off = 0;
    for i in 0..dim {
        let row = &m[off..off + dim - i];
        let off_diag = dot_mixed(&row[1..], &x[i + 1..]);
        total += x[i] * (f64::from(row[0]) * x[i] + 2.0 * off_diag);
        off += dim - i;
    }
    total
}

/// `M += alpha·u uᵀ` on the packed f64 matrix, writing the f32 mirror in the same pass.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rank1_mirror(m: &mut [f64], mirror: &mut [f32], alpha: f64, u: &[f64]) {
    let dim = u.len();
    let mut off = 0;
    for i in 0..dim {
        let len = dim - i;
        let row = &mut m[off..off + len];
        let mrow = &mut mirror[off..off + len];
        let ui = &u[i..i + len];
        let va = _mm256_set1_pd(alpha * u[i]);
        let (pr, pm, pu) = (row.as_mut_ptr(), mrow.as_mut_ptr(), ui.as_ptr());
        let mut j = 0;
        while j + 4 <= len {
            let r = _mm256_fmadd_pd(va, _mm256_loadu_pd(pu.add(j)), _mm256_loadu_pd(pr.add(j)));
            _mm256_storeu_pd(pr.add(j), r);
            _mm_storeu_ps(pm.add(j), _mm256_cvtpd_ps(r));
            j += 4;
        }
        while j < len {
            let v = (alpha * u[i]).mul_add(*pu.add(j), *pr.add(j));
            *pr.add(j) = v;
            *pm.add(j) = v as f32;
            j += 1;
        }
        off += len;
    }
}

/// `M += alpha·u uᵀ`, one loop over the packed rows (no call per row). Rows go last to
/// first: a row's masked tail store covers the first lanes of the next row in memory, and a
/// load of those lanes right after the store could not be forwarded from it (a stall per
/// row); walking backwards, that next row was written a whole row earlier.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rank1(m: &mut [f64], alpha: f64, u: &[f64]) {
    let dim = u.len();
    assert!(m.len() >= dim * (dim + 1) / 2);
    let (pm, pu) = (m.as_mut_ptr(), u.as_ptr());
    let mut off = dim * (dim + 1) / 2;
    for i in (0..dim).rev() {
        let len = dim - i;
        off -= len;
        axpy_raw(
            _mm256_set1_pd(alpha * *pu.add(i)),
            pu.add(i),
            pm.add(off),
            len,
        );
    }
}

/// `M += Σ_k c_k·u_k u_kᵀ` on the packed f64 matrix (the `n` vectors `u_k` row-major in `us`,
/// each of length `dim`), writing the f32 mirror (if not empty) in the same pass. Each
/// 4-wide chunk of a row is loaded and stored once for all `n` terms; two chunks go together
/// so each broadcast coefficient serves both. Rows go last to first, as in [`rank1`], and the
/// row tail is a masked vector step.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rank_k_mirror(m: &mut [f64], mirror: &mut [f32], cs: &[f64], us: &[f64]) {
    let n = cs.len();
    let dim = us.len().checked_div(n).unwrap_or(0);
    assert!(n <= 16 && m.len() >= dim * (dim + 1) / 2);
    let mirrored = !mirror.is_empty();
    if mirrored {
        assert!(mirror.len() >= dim * (dim + 1) / 2);
    }
    let (pm, pmr, pus) = (m.as_mut_ptr(), mirror.as_mut_ptr(), us.as_ptr());
    let mut coef = [_mm256_setzero_pd(); 16];
    let mut off = dim * (dim + 1) / 2;
    for i in (0..dim).rev() {
        let len = dim - i;
        off -= len;
        for k in 0..n {
            coef[k] = _mm256_set1_pd(cs[k] * *pus.add(k * dim + i));
        }
        let (pr, pu) = (pm.add(off), pus.add(i));
        let mut j = 0;
        while j + 8 <= len {
            let mut acc0 = _mm256_loadu_pd(pr.add(j));
            let mut acc1 = _mm256_loadu_pd(pr.add(j + 4));
            for (k, c) in coef[..n].iter().enumerate() {
                let u = pu.add(k * dim + j);
                acc0 = _mm256_fmadd_pd(*c, _mm256_loadu_pd(u), acc0);
                acc1 = _mm256_fmadd_pd(*c, _mm256_loadu_pd(u.add(4)), acc1);
            }
            _mm256_storeu_pd(pr.add(j), acc0);
            _mm256_storeu_pd(pr.add(j + 4), acc1);
            if mirrored {
                _mm_storeu_ps(pmr.add(off + j), _mm256_cvtpd_ps(acc0));
                _mm_storeu_ps(pmr.add(off + j + 4), _mm256_cvtpd_ps(acc1));
            }
            j += 8;
        }
        if j + 4 <= len {
            let mut acc = _mm256_loadu_pd(pr.add(j));
            for (k, c) in coef[..n].iter().enumerate() {
                acc = _mm256_fmadd_pd(*c, _mm256_loadu_pd(pu.add(k * dim + j)), acc);
            }
            _mm256_storeu_pd(pr.add(j), acc);
            if mirrored {
                _mm_storeu_ps(pmr.add(off + j), _mm256_cvtpd_ps(acc));
            }
            j += 4;
        }
        if j < len {
            let rem = len - j;
            let mk = tail_mask(rem);
            let mut acc = _mm256_maskload_pd(pr.add(j), mk);
            for (k, c) in coef[..n].iter().enumerate() {
                acc = _mm256_fmadd_pd(*c, _mm256_maskload_pd(pu.add(k * dim + j), mk), acc);
            }
            _mm256_maskstore_pd(pr.add(j), mk, acc);
            if mirrored {
                let m32 = _mm_loadu_si128(TAIL_MASKS_32[rem].as_ptr().cast());
                _mm_maskstore_ps(pmr.add(off + j), m32, _mm256_cvtpd_ps(acc));
            }
        }
    }
}
