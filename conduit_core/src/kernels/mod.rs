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

#[cfg(target_arch = "x86_64")]
mod avx;
mod portable;
use portable::*;

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
    /// `out[k] = xᵀ M_k x` for several packed symmetric matrices (`x.len()` is the
    /// dimension), in sweeps of up to four matrices that share the reads of `x`.
    quad_forms, quad_many, quad_many_portable,
    (ms: &[&[f64]], x: &[f64], out: &mut [f64]) -> ()
);
dispatch!(
    /// [`quad_forms`] for matrices stored as f32, every product and sum in f64.
    quad_forms_mixed, quad_mixed_many, quad_mixed_many_portable,
    (ms: &[&[f32]], x: &[f64], out: &mut [f64]) -> ()
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

dispatch!(
    /// `M += Σ_k cs[k]·u_k u_kᵀ` (at most 16 terms; `us` holds the `u_k` row-major) on a packed
    /// symmetric matrix, refreshing its f32 mirror (unless empty) in the same pass.
    rank_k_update_mirrored, rank_k_mirror, rank_k_mirror_portable,
    (m: &mut [f64], mirror: &mut [f32], cs: &[f64], us: &[f64]) -> ()
);

/// From this dimension on selection reads an f32 mirror of `A⁻¹` (products and sums in f64):
/// at d = 386 each arm's packed f64 inverse is 584 KiB, selection is bound by memory
/// bandwidth, and halving the bytes read nearly halves its time. The f64 inverse stays the
/// master copy for `θ`, updates and snapshots; only the exploration width `sqrt(xᵀA⁻¹x)` is
/// computed from the mirror, to about 1e-7 relative. Below it (up to 192, where a few arms'
/// f64 inverses still sit in the 4 MiB L2) selection reads the f64 inverse and is exact.
pub const MIRROR_MIN_DIM: usize = 193;

#[cfg(test)]
mod tests {
    use super::*;

    fn full(m: &[f64], dim: usize) -> Vec<Vec<f64>> {
        (0..dim)
            .map(|i| (0..dim).map(|j| packed_get(m, dim, i, j)).collect())
            .collect()
    }

    #[test]
    fn rank_k_update_equals_k_rank1_updates_and_mirrors() {
        for dim in [1usize, 3, 8, 13, 200] {
            let n = 5;
            let cs: Vec<f64> = (0..n).map(|k| 0.3 - 0.2 * k as f64).collect();
            let us: Vec<f64> = (0..n * dim).map(|i| (i as f64 * 0.71).sin()).collect();
            let mut want = packed_scaled_identity(dim, 1.5);
            for k in 0..n {
                rank1_update(&mut want, cs[k], &us[k * dim..(k + 1) * dim]);
            }
            let mut got = packed_scaled_identity(dim, 1.5);
            let mut mirror = vec![0.0f32; packed_len(dim)];
            rank_k_update_mirrored(&mut got, &mut mirror, &cs, &us);
            let mut plain = packed_scaled_identity(dim, 1.5);
            rank_k_update_mirrored(&mut plain, &mut [], &cs, &us);
            for ((g, w), (m, p)) in got.iter().zip(&want).zip(mirror.iter().zip(&plain)) {
                assert!((g - w).abs() < 1e-12, "dim {dim}");
                assert_eq!(*m, *g as f32);
                assert_eq!(p, g);
            }
        }
    }

    #[test]
    fn batched_quad_forms_match_one_at_a_time() {
        for dim in [1usize, 2, 3, 4, 5, 7, 8, 9, 17, 33, 200] {
            let x: Vec<f64> = (0..dim).map(|i| (i as f64 * 0.91).cos()).collect();
            for n in 1..=7 {
                let ms: Vec<Vec<f64>> = (0..n)
                    .map(|k| {
                        let mut m = packed_scaled_identity(dim, 1.0 + k as f64);
                        let u: Vec<f64> = (0..dim).map(|i| ((i + 3 * k) as f64).sin()).collect();
                        rank1_update(&mut m, 0.25, &u);
                        m
                    })
                    .collect();
                let refs: Vec<&[f64]> = ms.iter().map(Vec::as_slice).collect();
                let mut got = vec![f64::NAN; n];
                quad_forms(&refs, &x, &mut got);
                let m32: Vec<Vec<f32>> = ms
                    .iter()
                    .map(|m| m.iter().map(|v| *v as f32).collect())
                    .collect();
                let refs32: Vec<&[f32]> = m32.iter().map(Vec::as_slice).collect();
                let mut got32 = vec![f64::NAN; n];
                quad_forms_mixed(&refs32, &x, &mut got32);
                for k in 0..n {
                    let want = quad_form(&ms[k], &x);
                    assert!(
                        (got[k] - want).abs() < 1e-12 * want.abs().max(1.0),
                        "dim {dim}"
                    );
                    let want32 = quad_form_mixed(&m32[k], &x);
                    assert!((got32[k] - want32).abs() < 1e-12 * want32.abs().max(1.0));
                }
            }
        }
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
