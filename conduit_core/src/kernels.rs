//! Inner loops over symmetric matrices stored packed (upper triangle, row after row), the
//! storage every linear policy uses for `A` and `A⁻¹`: the quadratic form and the matvec read
//! half the memory of a full matrix, and at d = 386 that halving is most of the speed.
//!
//! Each kernel has a portable version (plain loops with independent accumulators) and an
//! explicit AVX2+FMA version chosen at run time. The two round differently in the last bits
//! (fused multiply-add, summation order), which is why tests compare them to a tolerance.

/// Number of stored entries of a packed symmetric `dim x dim` matrix.
pub const fn packed_len(dim: usize) -> usize {
    dim * (dim + 1) / 2
}

/// Offset of row `i` (its diagonal entry) in a packed matrix of dimension `dim`.
#[inline(always)]
pub const fn row_start(dim: usize, i: usize) -> usize {
    i * (2 * dim + 1 - i) / 2
}

/// Below this dimension a batch of quadratic forms first builds the packed outer product of
/// `x` (off-diagonal entries doubled) and then takes one flat dot product per matrix: no
/// per-row loop overhead, which dominates for short rows. Above it the outer product would
/// double the memory each form reads, and rows are long enough to amortise their overhead.
pub const FLAT_QUAD_MAX_DIM: usize = 192;

/// Writes the packed `x xᵀ` with off-diagonal entries doubled, so that for any packed
/// symmetric `M`, `xᵀ M x = dot(M, out)`.
pub fn packed_outer_doubled(x: &[f64], out: &mut Vec<f64>) {
    let dim = x.len();
    out.clear();
    out.resize(packed_len(dim), 0.0);
    let mut off = 0;
    for i in 0..dim {
        let len = dim - i;
        let xi = x[i];
        let row = &mut out[off..off + len];
        row[0] = xi * xi;
        for (o, xj) in row[1..].iter_mut().zip(&x[i + 1..]) {
            *o = 2.0 * xi * xj;
        }
        off += len;
    }
}

/// Packed identity scaled by `value`.
pub fn packed_scaled_identity(dim: usize, value: f64) -> Vec<f64> {
    let mut m = vec![0.0; packed_len(dim)];
    for i in 0..dim {
        m[row_start(dim, i)] = value;
    }
    m
}

/// Entry (i, j) of a packed symmetric matrix.
#[inline]
pub fn packed_get(m: &[f64], dim: usize, i: usize, j: usize) -> f64 {
    let (r, c) = if i <= j { (i, j) } else { (j, i) };
    m[row_start(dim, r) + (c - r)]
}

#[inline(always)]
fn dot_portable(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // Four independent sums so the loop is not one long dependency chain.
    let mut acc = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        acc[0] += x[0] * y[0];
        acc[1] += x[1] * y[1];
        acc[2] += x[2] * y[2];
        acc[3] += x[3] * y[3];
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

#[inline(always)]
fn axpy_portable(alpha: f64, x: &[f64], y: &mut [f64]) {
    let n = x.len().min(y.len());
    for (yi, xi) in y[..n].iter_mut().zip(&x[..n]) {
        *yi += alpha * *xi;
    }
}

fn quad_portable(m: &[f64], x: &[f64]) -> f64 {
    let dim = x.len();
    let mut total = 0.0;
    let mut off = 0;
    for i in 0..dim {
        let row = &m[off..off + dim - i];
        let off_diag = dot_portable(&row[1..], &x[i + 1..]);
        total += x[i] * (row[0] * x[i] + 2.0 * off_diag);
        off += dim - i;
    }
    total
}

fn matvec_portable(m: &[f64], x: &[f64], y: &mut [f64]) {
    let dim = x.len();
    y[..dim].fill(0.0);
    let mut off = 0;
    for i in 0..dim {
        let row = &m[off..off + dim - i];
        let xi = x[i];
        // Row i gives y[i] its dot product and, by symmetry, xi * M[i, j] to every y[j].
        let s = dot_portable(&row[1..], &x[i + 1..]);
        axpy_portable(xi, &row[1..], &mut y[i + 1..dim]);
        y[i] += row[0] * xi + s;
        off += dim - i;
    }
}

fn rank1_portable(m: &mut [f64], alpha: f64, u: &[f64]) {
    let dim = u.len();
    let mut off = 0;
    for i in 0..dim {
        axpy_portable(alpha * u[i], &u[i..], &mut m[off..off + dim - i]);
        off += dim - i;
    }
}

#[inline(always)]
fn dot_mixed_portable(a: &[f32], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let mut acc = [0.0f64; 4];
    let mut ca = a[..n].chunks_exact(4);
    let mut cb = b[..n].chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..4 {
            acc[k] += f64::from(x[k]) * y[k];
        }
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| f64::from(*x) * y)
        .sum();
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

fn quad_mixed_portable(m: &[f32], x: &[f64]) -> f64 {
    let dim = x.len();
    let mut total = 0.0;
    let mut off = 0;
    for i in 0..dim {
        let row = &m[off..off + dim - i];
        let off_diag = dot_mixed_portable(&row[1..], &x[i + 1..]);
        total += x[i] * (f64::from(row[0]) * x[i] + 2.0 * off_diag);
        off += dim - i;
    }
    total
}

fn rank1_mirror_portable(m: &mut [f64], mirror: &mut [f32], alpha: f64, u: &[f64]) {
    let dim = u.len();
    let mut off = 0;
    for i in 0..dim {
        let a = alpha * u[i];
        let len = dim - i;
        for ((v, w), uj) in m[off..off + len]
            .iter_mut()
            .zip(&mut mirror[off..off + len])
            .zip(&u[i..])
        {
            *v += a * uj;
            *w = *v as f32;
        }
        off += len;
    }
}

/// Explicit AVX2+FMA versions; every function requires the CPU features (checked by the
/// dispatchers below before any call).
#[cfg(target_arch = "x86_64")]
mod avx {
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
    static TAIL_MASKS: [[i64; 4]; 4] =
        [[0, 0, 0, 0], [-1, 0, 0, 0], [-1, -1, 0, 0], [-1, -1, -1, 0]];

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
}

/// Whether the AVX2+FMA kernels may run (std caches the CPU check).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $fast:ident, $portable:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2_fma() {
                    // SAFETY: the CPU was just checked to support AVX2 and FMA, and the
                    // kernels only read and write within the slices they are given.
                    return unsafe { avx::$fast($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}

dispatch!(
    /// Dot product of two slices (over the shorter length).
    dot, dot, dot_portable, (a: &[f64], b: &[f64]) -> f64
);
dispatch!(
    /// `y += alpha * x` (over the shorter length).
    axpy, axpy, axpy_portable, (alpha: f64, x: &[f64], y: &mut [f64]) -> ()
);
dispatch!(
    /// Quadratic form `x^T M x` of a packed symmetric matrix; `x.len()` is the dimension.
    quad_form, quad, quad_portable, (m: &[f64], x: &[f64]) -> f64
);
dispatch!(
    /// `y = M x` for a packed symmetric matrix; `x.len()` is the dimension.
    sym_matvec, matvec, matvec_portable, (m: &[f64], x: &[f64], y: &mut [f64]) -> ()
);
dispatch!(
    /// `M += alpha * u u^T` on a packed symmetric matrix; `u.len()` is the dimension.
    rank1_update, rank1, rank1_portable, (m: &mut [f64], alpha: f64, u: &[f64]) -> ()
);
dispatch!(
    /// `x^T M x` for a packed symmetric `M` stored as f32, accumulated in f64.
    quad_form_mixed, quad_mixed, quad_mixed_portable, (m: &[f32], x: &[f64]) -> f64
);
dispatch!(
    /// [`rank1_update`] that also refreshes an f32 copy of `M` in the same pass.
    rank1_update_mirrored, rank1_mirror, rank1_mirror_portable,
    (m: &mut [f64], mirror: &mut [f32], alpha: f64, u: &[f64]) -> ()
);

/// Above this dimension selection reads an f32 mirror of `A⁻¹` (products and sums in f64):
/// at d = 386 each arm's packed f64 inverse is 584 KiB, selection is bound by memory
/// bandwidth, and halving the bytes read nearly halves its time. The f64 inverse stays the
/// master copy for `θ`, updates and snapshots; only the exploration width `sqrt(xᵀA⁻¹x)` is
/// computed from the mirror, to about 1e-7 relative.
pub const MIRROR_MIN_DIM: usize = FLAT_QUAD_MAX_DIM + 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn full(m: &[f64], dim: usize) -> Vec<Vec<f64>> {
        (0..dim)
            .map(|i| (0..dim).map(|j| packed_get(m, dim, i, j)).collect())
            .collect()
    }

    #[test]
    fn row_starts_follow_the_packed_layout() {
        let dim = 7;
        let mut expected = 0;
        for i in 0..dim {
            assert_eq!(row_start(dim, i), expected);
            expected += dim - i;
        }
        assert_eq!(expected, packed_len(dim));
    }

    #[test]
    fn kernels_match_the_full_matrix_arithmetic() {
        for dim in [1usize, 2, 7, 8, 9, 17, 33] {
            let mut m = packed_scaled_identity(dim, 2.0);
            let u: Vec<f64> = (0..dim).map(|i| (i as f64 * 0.37).sin()).collect();
            rank1_update(&mut m, 0.5, &u);
            let x: Vec<f64> = (0..dim).map(|i| (i as f64 * 1.3).cos()).collect();
            let f = full(&m, dim);
            for i in 0..dim {
                for j in 0..dim {
                    let want = if i == j { 2.0 } else { 0.0 } + 0.5 * u[i] * u[j];
                    assert!((f[i][j] - want).abs() < 1e-12);
                }
            }
            let mut y = vec![0.0; dim];
            sym_matvec(&m, &x, &mut y);
            let mut q = 0.0;
            for i in 0..dim {
                let yi: f64 = (0..dim).map(|j| f[i][j] * x[j]).sum();
                assert!((y[i] - yi).abs() < 1e-12, "dim {dim} row {i}");
                q += x[i] * yi;
            }
            assert!((quad_form(&m, &x) - q).abs() < 1e-10 * q.abs().max(1.0));
            assert!(
                (dot(&x, &u) - x.iter().zip(&u).map(|(a, b)| a * b).sum::<f64>()).abs() < 1e-12
            );
        }
    }
}
