//! Exact inversion of a packed symmetric positive-definite matrix by Cholesky factorisation.
//! Used for the periodic re-factorisation that bounds Sherman–Morrison rounding drift, after
//! a merge, and when a downdate is too ill-conditioned to apply as a rank-1 correction.

use crate::kernels::{axpy, dot, packed_len, row_start};

/// Returns the packed inverse of the packed SPD matrix `a`, or `None` when `a` is not
/// numerically positive definite (a pivot that is not finite or not above a relative floor).
pub fn invert_spd_packed(a: &[f64], dim: usize) -> Option<Vec<f64>> {
    // Full row-major lower factor L with A = L L^T; rows are contiguous so every inner
    // product below runs over contiguous memory.
    let mut l = vec![0.0f64; dim * dim];
    let max_diag = (0..dim)
        .map(|i| a[row_start(dim, i)].abs())
        .fold(0.0f64, f64::max);
    let floor = max_diag * 1e-300_f64.max(f64::EPSILON * f64::EPSILON);
    for j in 0..dim {
        let (head, rest) = l.split_at_mut(j * dim);
        let row_j = &mut rest[..dim];
        let pivot = a[row_start(dim, j)] - dot(&row_j[..j], &row_j[..j]);
        if !pivot.is_finite() || pivot <= floor {
            return None;
        }
        let ljj = pivot.sqrt();
        row_j[j] = ljj;
        let _ = head;
        for i in j + 1..dim {
            let (upper, lower) = l.split_at_mut(i * dim);
            let row_j = &upper[j * dim..j * dim + j];
            let row_i = &mut lower[..dim];
            let aij = a[row_start(dim, j) + (i - j)];
            row_i[j] = (aij - dot(&row_i[..j], row_j)) / ljj;
        }
    }
    // Rows of L^-1 (lower triangular): row_i = (e_i - sum_{k<i} L[i][k] row_k) / L[i][i].
    let mut linv = vec![0.0f64; dim * dim];
    for i in 0..dim {
        let (done, rest) = linv.split_at_mut(i * dim);
        let row_i = &mut rest[..dim];
        row_i[i] = 1.0;
        for k in 0..i {
            let lik = l[i * dim + k];
            if lik != 0.0 {
                axpy(-lik, &done[k * dim..k * dim + k + 1], &mut row_i[..k + 1]);
            }
        }
        let inv_diag = 1.0 / l[i * dim + i];
        for v in &mut row_i[..=i] {
            *v *= inv_diag;
        }
    }
    // A^-1 = L^-T L^-1 = sum_k (row_k of L^-1)^T (row_k of L^-1); row k is zero past k.
    let mut out = vec![0.0f64; packed_len(dim)];
    for k in 0..dim {
        let rk = &linv[k * dim..k * dim + k + 1];
        for i in 0..=k {
            let start = row_start(dim, i);
            axpy(rk[i], &rk[i..], &mut out[start..start + (k + 1 - i)]);
        }
    }
    if out.iter().all(|v| v.is_finite()) {
        Some(out)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{packed_get, packed_scaled_identity, rank1_update};

    #[test]
    fn inverse_times_matrix_is_identity() {
        for dim in [1usize, 3, 8, 17] {
            let mut a = packed_scaled_identity(dim, 0.5);
            for t in 0..(3 * dim) {
                let x: Vec<f64> = (0..dim).map(|i| ((i * 7 + t * 3) as f64).sin()).collect();
                rank1_update(&mut a, 0.8, &x);
            }
            let inv = invert_spd_packed(&a, dim).expect("spd");
            for i in 0..dim {
                for j in 0..dim {
                    let v: f64 = (0..dim)
                        .map(|k| packed_get(&inv, dim, i, k) * packed_get(&a, dim, k, j))
                        .sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 1e-10, "dim {dim} ({i},{j}) {v}");
                }
            }
        }
    }

    #[test]
    fn singular_matrix_is_refused() {
        let mut a = vec![0.0; packed_len(3)];
        rank1_update(&mut a, 1.0, &[1.0, 2.0, 3.0]);
        assert!(invert_spd_packed(&a, 3).is_none());
    }
}
