//! Batched quadratic forms `xᵀ M_k x` of packed symmetric matrices (f64 or f32 storage,
//! f64 arithmetic): selection's inner loop.

use std::arch::x86_64::*;

use super::{hsum, tail_mask, TAIL_MASKS_32};

/// Loads 4 packed-matrix entries as f64, from f64 or f32 storage; lets one quadratic-form
/// kernel serve both the f64 inverse and its f32 selection mirror.
trait Lanes: Copy {
    unsafe fn load4(p: *const Self) -> __m256d;
    unsafe fn load4_masked(p: *const Self, rem: usize) -> __m256d;
    fn widen(self) -> f64;
}

impl Lanes for f64 {
    #[inline(always)]
    unsafe fn load4(p: *const f64) -> __m256d {
        _mm256_loadu_pd(p)
    }
    #[inline(always)]
    unsafe fn load4_masked(p: *const f64, rem: usize) -> __m256d {
        _mm256_maskload_pd(p, tail_mask(rem))
    }
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> __m256d {
        _mm256_cvtps_pd(_mm_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn load4_masked(p: *const f32, rem: usize) -> __m256d {
        let m32 = _mm_loadu_si128(TAIL_MASKS_32[rem].as_ptr().cast());
        _mm256_cvtps_pd(_mm_maskload_ps(p, m32))
    }
    #[inline(always)]
    fn widen(self) -> f64 {
        f64::from(self)
    }
}

/// `xᵀ M_k x` for `N` packed matrices in one sweep, four rows at a time. In a block of rows
/// `i..i+4`, the 4x4 corner is four vector FMAs (coefficients `x_r²` on the diagonal and
/// `2·x_r·x_c` above, zero on the lanes before a row's diagonal), and each 4-wide chunk of
/// columns beyond it adds `xⱼ·Σ_r 2·x_r·M[r, j]`. Per-row work (setup, masked tails), which
/// dominates at small dimensions where rows are short, is paid once per four rows, and only
/// the matrices are read from memory.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn quad_n<T: Lanes, const N: usize>(ms: [&[T]; N], x: &[f64]) -> [f64; N] {
    let dim = x.len();
    let need = dim * (dim + 1) / 2;
    let mut ps = [std::ptr::null::<T>(); N];
    for k in 0..N {
        assert!(ms[k].len() >= need, "packed matrix too short");
        ps[k] = ms[k].as_ptr();
    }
    let px = x.as_ptr();
    let mut acc = [_mm256_setzero_pd(); N];
    let mut i = 0;
    let mut off = 0;
    while i + 4 <= dim {
        let xs = [*px.add(i), *px.add(i + 1), *px.add(i + 2), *px.add(i + 3)];
        let d2 = [2.0 * xs[0], 2.0 * xs[1], 2.0 * xs[2], 2.0 * xs[3]];
        // Row r of the corner is loaded from r lanes before its diagonal (the end of the
        // previous row, inside the matrix), and those lanes get a zero coefficient.
        let c0 = _mm256_setr_pd(xs[0] * xs[0], d2[0] * xs[1], d2[0] * xs[2], d2[0] * xs[3]);
        let c1 = _mm256_setr_pd(0.0, xs[1] * xs[1], d2[1] * xs[2], d2[1] * xs[3]);
        let c2 = _mm256_setr_pd(0.0, 0.0, xs[2] * xs[2], d2[2] * xs[3]);
        let c3 = _mm256_setr_pd(0.0, 0.0, 0.0, xs[3] * xs[3]);
        let l0 = off;
        let l1 = l0 + (dim - i) - 1;
        let l2 = l1 + (dim - i - 1) - 1;
        let l3 = l2 + (dim - i - 2) - 1;
        for k in 0..N {
            let p = ps[k];
            let mut a = acc[k];
            a = _mm256_fmadd_pd(T::load4(p.add(l0)), c0, a);
            a = _mm256_fmadd_pd(T::load4(p.add(l1)), c1, a);
            a = _mm256_fmadd_pd(T::load4(p.add(l2)), c2, a);
            acc[k] = _mm256_fmadd_pd(T::load4(p.add(l3)), c3, a);
        }
        // Column i + 4 + j of row i + r is at l_r + 4 + j.
        let (x0, x1, x2, x3) = (
            _mm256_set1_pd(d2[0]),
            _mm256_set1_pd(d2[1]),
            _mm256_set1_pd(d2[2]),
            _mm256_set1_pd(d2[3]),
        );
        let len = dim - i - 4;
        let pxj = px.add(i + 4);
        let (b0, b1, b2, b3) = (l0 + 4, l1 + 4, l2 + 4, l3 + 4);
        let mut j = 0;
        while j + 4 <= len {
            let xv = _mm256_loadu_pd(pxj.add(j));
            for k in 0..N {
                let p = ps[k];
                let mut t = _mm256_mul_pd(T::load4(p.add(b0 + j)), x0);
                t = _mm256_fmadd_pd(T::load4(p.add(b1 + j)), x1, t);
                t = _mm256_fmadd_pd(T::load4(p.add(b2 + j)), x2, t);
                t = _mm256_fmadd_pd(T::load4(p.add(b3 + j)), x3, t);
                acc[k] = _mm256_fmadd_pd(t, xv, acc[k]);
            }
            j += 4;
        }
        if j < len {
            let rem = len - j;
            let xv = _mm256_maskload_pd(pxj.add(j), tail_mask(rem));
            for k in 0..N {
                let p = ps[k];
                let mut t = _mm256_mul_pd(T::load4_masked(p.add(b0 + j), rem), x0);
                t = _mm256_fmadd_pd(T::load4_masked(p.add(b1 + j), rem), x1, t);
                t = _mm256_fmadd_pd(T::load4_masked(p.add(b2 + j), rem), x2, t);
                t = _mm256_fmadd_pd(T::load4_masked(p.add(b3 + j), rem), x3, t);
                acc[k] = _mm256_fmadd_pd(t, xv, acc[k]);
            }
        }
        off += 4 * (dim - i) - 6;
        i += 4;
    }
    let mut out = [0.0; N];
    for k in 0..N {
        out[k] = hsum(acc[k]);
    }
    // The last dim % 4 rows (at most three entries each), scalar.
    while i < dim {
        let len = dim - i;
        let xi = *px.add(i);
        for k in 0..N {
            let p = ps[k].add(off);
            let mut s = (*p).widen() * xi;
            for j in 1..len {
                s = (*p.add(j)).widen().mul_add(2.0 * *px.add(i + j), s);
            }
            out[k] = s.mul_add(xi, out[k]);
        }
        off += len;
        i += 1;
    }
    out
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn quad_many_t<T: Lanes>(ms: &[&[T]], x: &[f64], out: &mut [f64]) {
    let n = ms.len();
    assert!(out.len() >= n);
    let mut k = 0;
    // Up to four matrices per sweep (8 accumulators, the outer product and the loads fit in
    // the 16 registers); the last sweeps are balanced (5 = 3 + 2, 6 = 3 + 3, 7 = 4 + 3) so
    // that no matrix is left to a sweep of one, which has the fewest independent FMAs.
    while k < n {
        let take = match n - k {
            5 | 6 => 3,
            r => r.min(4),
        };
        match take {
            4 => out[k..k + 4]
                .copy_from_slice(&quad_n::<T, 4>([ms[k], ms[k + 1], ms[k + 2], ms[k + 3]], x)),
            3 => out[k..k + 3].copy_from_slice(&quad_n::<T, 3>([ms[k], ms[k + 1], ms[k + 2]], x)),
            2 => out[k..k + 2].copy_from_slice(&quad_n::<T, 2>([ms[k], ms[k + 1]], x)),
            _ => out[k] = quad_n::<T, 1>([ms[k]], x)[0],
        }
        k += take;
    }
}

#[target_feature(enable = "avx2,fma")]
pub unsafe fn quad_many(ms: &[&[f64]], x: &[f64], out: &mut [f64]) {
    quad_many_t(ms, x, out);
}

#[target_feature(enable = "avx2,fma")]
pub unsafe fn quad_mixed_many(ms: &[&[f32]], x: &[f64], out: &mut [f64]) {
    quad_many_t(ms, x, out);
}
