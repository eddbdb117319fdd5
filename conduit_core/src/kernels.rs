//! Inner loops over symmetric matrices stored packed (upper triangle, row after row), the
//! storage every linear policy uses for `A` and `A⁻¹`: the quadratic form and the matvec read
//! half the memory of a full matrix, and at d = 386 that halving is most of the speed.
//!
//! Each kernel is written once as a plain loop with several independent accumulators (so LLVM
//! can vectorise it without reassociating a single sum) and compiled twice: a portable copy
//! and an AVX2+FMA copy chosen at run time. The two copies round differently in the last bit
//! (fused multiply-add), which is why cross-machine tests compare to a tolerance, not bits.

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

#[inline(always)]
fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn dot_impl<const FMA: bool>(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let (ac, bc) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for k in 0..8 {
            acc[k] = madd::<FMA>(ac[k], bc[k], acc[k]);
        }
    }
    let mut tail = 0.0;
    for k in chunks * 8..n {
        tail = madd::<FMA>(a[k], b[k], tail);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[inline(always)]
fn axpy_impl<const FMA: bool>(alpha: f64, x: &[f64], y: &mut [f64]) {
    let n = x.len().min(y.len());
    for (yi, xi) in y[..n].iter_mut().zip(&x[..n]) {
        *yi = madd::<FMA>(alpha, *xi, *yi);
    }
}

/// `x^T M x` for packed symmetric `M`.
#[inline(always)]
fn quad_impl<const FMA: bool>(m: &[f64], x: &[f64]) -> f64 {
    let dim = x.len();
    let mut total = 0.0;
    let mut off = 0;
    for i in 0..dim {
        let row = &m[off..off + dim - i];
        let off_diag = dot_impl::<FMA>(&row[1..], &x[i + 1..]);
        total += x[i] * madd::<FMA>(2.0, off_diag, row[0] * x[i]);
        off += dim - i;
    }
    total
}

/// `y = M x` for packed symmetric `M` in one pass over `M`.
#[inline(always)]
fn matvec_impl<const FMA: bool>(m: &[f64], x: &[f64], y: &mut [f64]) {
    let dim = x.len();
    y[..dim].fill(0.0);
    let mut off = 0;
    for i in 0..dim {
        let row = &m[off..off + dim - i];
        let xi = x[i];
        // Row i contributes the dot product to y[i] and, by symmetry, xi * M[i, j] to y[j].
        let s = dot_impl::<FMA>(&row[1..], &x[i + 1..]);
        axpy_impl::<FMA>(xi, &row[1..], &mut y[i + 1..dim]);
        y[i] += madd::<FMA>(row[0], xi, s);
        off += dim - i;
    }
}

/// `M += alpha * u u^T` on the packed upper triangle.
#[inline(always)]
fn rank1_impl<const FMA: bool>(m: &mut [f64], alpha: f64, u: &[f64]) {
    let dim = u.len();
    let mut off = 0;
    for i in 0..dim {
        let a = alpha * u[i];
        axpy_impl::<FMA>(a, &u[i..], &mut m[off..off + dim - i]);
        off += dim - i;
    }
}

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $imp:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) -> $ret {
                    $imp::<true>($($arg),*)
                }
                if has_avx2_fma() {
                    // SAFETY: the CPU was just checked to support AVX2 and FMA.
                    return unsafe { fast($($arg),*) };
                }
            }
            $imp::<false>($($arg),*)
        }
    };
}

/// Whether the AVX2+FMA copies may run (cached by std after the first call).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

dispatch!(
    /// Dot product of two slices (over the shorter length).
    dot, dot_impl, (a: &[f64], b: &[f64]) -> f64
);
dispatch!(
    /// `y += alpha * x`.
    axpy, axpy_impl, (alpha: f64, x: &[f64], y: &mut [f64]) -> ()
);
dispatch!(
    /// Quadratic form `x^T M x` of a packed symmetric matrix; `x.len()` is the dimension.
    quad_form, quad_impl, (m: &[f64], x: &[f64]) -> f64
);
dispatch!(
    /// `y = M x` for a packed symmetric matrix; `x.len()` is the dimension.
    sym_matvec, matvec_impl, (m: &[f64], x: &[f64], y: &mut [f64]) -> ()
);
dispatch!(
    /// `M += alpha * u u^T` on a packed symmetric matrix; `u.len()` is the dimension.
    rank1_update, rank1_impl, (m: &mut [f64], alpha: f64, u: &[f64]) -> ()
);

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
