//! AVX2+FMA kernels; every function requires those CPU features, which the dispatchers in
//! `kernels` check before any call.

use std::arch::x86_64::*;

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
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm256_set1_pd(alpha);
    let mut i = 0;
    while i + 4 <= n {
        let r = _mm256_fmadd_pd(va, _mm256_loadu_pd(px.add(i)), _mm256_loadu_pd(py.add(i)));
        _mm256_storeu_pd(py.add(i), r);
        i += 4;
    }
    let m = tail_mask(n - i);
    let r = _mm256_fmadd_pd(
        va,
        _mm256_maskload_pd(px.add(i), m),
        _mm256_maskload_pd(py.add(i), m),
    );
    _mm256_maskstore_pd(py.add(i), m, r);
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

#[target_feature(enable = "avx2,fma")]
pub unsafe fn matvec(m: &[f64], x: &[f64], y: &mut [f64]) {
    let dim = x.len();
    y[..dim].fill(0.0);
    let mut off = 0;
    for i in 0..dim {
        let row = &m[off..off + dim - i];
        let xi = x[i];
        let s = dot(&row[1..], &x[i + 1..]);
        axpy(xi, &row[1..], &mut y[i + 1..dim]);
        y[i] += row[0] * xi + s;
        off += dim - i;
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

#[target_feature(enable = "avx2,fma")]
pub unsafe fn rank1(m: &mut [f64], alpha: f64, u: &[f64]) {
    let dim = u.len();
    let mut off = 0;
    for i in 0..dim {
        axpy(alpha * u[i], &u[i..], &mut m[off..off + dim - i]);
        off += dim - i;
    }
}

/// `M += Σ_k c_k·u_k u_kᵀ` on the packed f64 matrix (the `n` vectors `u_k` row-major in `us`,
/// each of length `dim`), writing the f32 mirror (if not empty) in the same pass. Each
/// 4-wide chunk of a row is loaded and stored once for all `n` terms.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rank_k_mirror(m: &mut [f64], mirror: &mut [f32], cs: &[f64], us: &[f64]) {
    let n = cs.len();
    let dim = us.len().checked_div(n).unwrap_or(0);
    let mirrored = !mirror.is_empty();
    let mut coef = [0.0f64; 16];
    let mut off = 0;
    for i in 0..dim {
        let len = dim - i;
        for k in 0..n {
            coef[k] = cs[k] * us[k * dim + i];
        }
        let pr = m.as_mut_ptr().add(off);
        let pu = us.as_ptr().add(i);
        let mut j = 0;
        while j + 4 <= len {
            let mut acc = _mm256_loadu_pd(pr.add(j));
            for (k, c) in coef[..n].iter().enumerate() {
                acc = _mm256_fmadd_pd(
                    _mm256_set1_pd(*c),
                    _mm256_loadu_pd(pu.add(k * dim + j)),
                    acc,
                );
            }
            _mm256_storeu_pd(pr.add(j), acc);
            if mirrored {
                _mm_storeu_ps(mirror.as_mut_ptr().add(off + j), _mm256_cvtpd_ps(acc));
            }
            j += 4;
        }
        while j < len {
            let mut v = *pr.add(j);
            for (k, c) in coef[..n].iter().enumerate() {
                v = c.mul_add(*pu.add(k * dim + j), v);
            }
            *pr.add(j) = v;
            if mirrored {
                mirror[off + j] = v as f32;
            }
            j += 1;
        }
        off += len;
    }
}
