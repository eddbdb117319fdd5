/*
 * Naive disjoint LinUCB in plain C, all f64: the reference the issue names ("a naive C loop
 * with -O3"). Compiled at bench time by benches/naive_c.py with `gcc -O3` (no -march, no
 * -ffast-math) and called through ctypes.
 *
 * "Naive" means: the full d x d A^-1 per arm in f64 (no packing, no f32, no factor), no BLAS,
 * no threads, no intrinsics. The loops are still written in the order a careful C programmer
 * would (row-major axpy form, so gcc vectorises them without reassociating a reduction),
 * because a deliberately slow loop would make the "not slower than C" target meaningless.
 *
 * Memory layout (owned by the caller, NumPy arrays): a_inv[K][d][d], b[K][d], theta[K][d],
 * scratch[d] (used by update), scores[K] (written by select).
 */
#include <math.h>
#include <stddef.h>

/* u = M x for a symmetric row-major d x d matrix M, in axpy order (u = sum_i x_i M[i,:], equal
 * to M x because M is symmetric): the inner loop has no reduction, so -O3 vectorises it. */
static void matvec(const double *m, const double *x, double *u, size_t d) {
    for (size_t j = 0; j < d; j++) {
        u[j] = 0.0;
    }
    for (size_t i = 0; i < d; i++) {
        const double *row = m + i * d;
        double xi = x[i];
        for (size_t j = 0; j < d; j++) {
            u[j] += xi * row[j];
        }
    }
}

/* Score every arm and return the index of the best one (lowest index on ties). */
long naive_linucb_select(const double *a_inv, const double *theta, const double *x,
                         double *scores, double *scratch, long n_arms, long dim,
                         double alpha) {
    size_t d = (size_t)dim;
    long best = 0;
    for (long k = 0; k < n_arms; k++) {
        const double *m = a_inv + (size_t)k * d * d;
        const double *t = theta + (size_t)k * d;
        matvec(m, x, scratch, d);
        double width = 0.0;
        double mean = 0.0;
        for (size_t i = 0; i < d; i++) {
            width += x[i] * scratch[i];
            mean += t[i] * x[i];
        }
        if (width < 0.0) {
            width = 0.0;
        }
        double s = mean + alpha * sqrt(width);
        scores[k] = s;
        if (s > scores[best]) {
            best = k;
        }
    }
    return best;
}

/* Weighted Sherman-Morrison update of one arm, then theta = A^-1 b. */
void naive_linucb_update(double *a_inv, double *b, double *theta, const double *x,
                         double *scratch, long arm, long dim, double reward, double weight) {
    size_t d = (size_t)dim;
    double *m = a_inv + (size_t)arm * d * d;
    double *bk = b + (size_t)arm * d;
    double *t = theta + (size_t)arm * d;
    matvec(m, x, scratch, d);
    double xu = 0.0;
    for (size_t i = 0; i < d; i++) {
        xu += x[i] * scratch[i];
    }
    double c = weight / (1.0 + weight * xu);
    for (size_t i = 0; i < d; i++) {
        double ci = c * scratch[i];
        double *row = m + i * d;
        for (size_t j = 0; j < d; j++) {
            row[j] -= ci * scratch[j];
        }
    }
    for (size_t i = 0; i < d; i++) {
        bk[i] += weight * reward * x[i];
    }
    matvec(m, bk, t, d);
}
