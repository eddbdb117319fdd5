//! Portable kernels (plain loops with independent accumulators), used on CPUs without
//! AVX2+FMA and as the reference the AVX2 versions are tested against.

#[inline(always)]
pub(super) fn dot_portable(a: &[f64], b: &[f64]) -> f64 {
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
pub(super) fn axpy_portable(alpha: f64, x: &[f64], y: &mut [f64]) {
    let n = x.len().min(y.len());
    for (yi, xi) in y[..n].iter_mut().zip(&x[..n]) {
        *yi += alpha * *xi;
    }
}

pub(super) fn quad_portable(m: &[f64], x: &[f64]) -> f64 {
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

pub(super) fn matvec_portable(m: &[f64], x: &[f64], y: &mut [f64]) {
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

pub(super) fn rank1_portable(m: &mut [f64], alpha: f64, u: &[f64]) {
    let dim = u.len();
    let mut off = 0;
    for i in 0..dim {
        axpy_portable(alpha * u[i], &u[i..], &mut m[off..off + dim - i]);
        off += dim - i;
    }
}

#[inline(always)]
pub(super) fn dot_mixed_portable(a: &[f32], b: &[f64]) -> f64 {
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

pub(super) fn quad_mixed_portable(m: &[f32], x: &[f64]) -> f64 {
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

pub(super) fn rank1_mirror_portable(m: &mut [f64], mirror: &mut [f32], alpha: f64, u: &[f64]) {
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

pub(super) fn rank_k_mirror_portable(m: &mut [f64], mirror: &mut [f32], cs: &[f64], us: &[f64]) {
    let n = cs.len();
    let dim = us.len().checked_div(n).unwrap_or(0);
    let mut off = 0;
    for i in 0..dim {
        let len = dim - i;
        let row = &mut m[off..off + len];
        for k in 0..n {
            let u = &us[k * dim..(k + 1) * dim];
            axpy_portable(cs[k] * u[i], &u[i..], row);
        }
        if !mirror.is_empty() {
            for (w, v) in mirror[off..off + len].iter_mut().zip(row.iter()) {
                *w = *v as f32;
            }
        }
        off += len;
    }
}

pub(super) fn quad_many_portable(ms: &[&[f64]], x: &[f64], out: &mut [f64]) {
    for (m, o) in ms.iter().zip(out.iter_mut()) {
        *o = quad_portable(m, x);
    }
}

pub(super) fn quad_mixed_many_portable(ms: &[&[f32]], x: &[f64], out: &mut [f64]) {
    for (m, o) in ms.iter().zip(out.iter_mut()) {
        *o = quad_mixed_portable(m, x);
    }
}
