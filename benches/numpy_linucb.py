"""A fair, vectorised NumPy LinUCB: the baseline the Rust core is measured against.

Disjoint LinUCB, one ridge model per arm, written the way a careful NumPy user would:

- every array is allocated once (``A^-1`` for all arms as one ``(K, d, d)`` block, ``b`` and
  the cached ``theta`` as ``(K, d)``), and the hot paths write into preallocated buffers;
- selection scores every arm with one BLAS matrix-vector product over the stacked ``A^-1``
  (a ``(K*d, d)`` view), so the Python overhead does not grow with K;
- an update is a weighted Sherman-Morrison step done in place with BLAS ``dger`` (a rank-1
  update), never an inversion, followed by one ``dgemv`` to refresh the cached ``theta``.

It deliberately has no input validation beyond what NumPy does: it is a speed and regret
reference, not a product.

Threads: ``dger`` comes from SciPy, whose wheel ships its own OpenBLAS next to NumPy's. Two
OpenBLAS thread pools on a 2-core machine spin against each other (measured here: a
select+update at d=386, K=5 went from ~0.25 ms to ~8 ms), so ``pin_rank1_blas`` gives SciPy's
pool one thread. NumPy's own BLAS, which does the matrix-vector products, is left as it is.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.linalg.blas import dger

__all__ = ["NumpyLinUCB", "pin_rank1_blas"]


def pin_rank1_blas() -> str:
    """Limit SciPy's bundled OpenBLAS (used only for ``dger``) to one thread, process-wide.

    Returns a description of what was done, for the benchmark header.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return "threadpoolctl missing: SciPy's BLAS threads left as they are"
    controller = ThreadpoolController()
    scipy_pools = [
        info
        for info in controller.info()
        if info.get("user_api") == "blas" and "scipy.libs" in str(info.get("filepath"))
    ]
    if not scipy_pools:
        return "SciPy shares NumPy's BLAS: nothing to limit"
    for info in scipy_pools:
        controller.select(filepath=info["filepath"]).limit(limits=1)
    return f"SciPy's own OpenBLAS ({len(scipy_pools)} pool) limited to 1 thread for dger"


class NumpyLinUCB:
    """Disjoint LinUCB with ``A^-1`` kept by Sherman-Morrison.

    Arms are indices ``0..n_arms-1``. Score of arm k for context x:
    ``theta_k . x + alpha * sqrt(x^T A_k^-1 x)`` with ``A_k = ridge*I + sum w x x^T``.
    """

    def __init__(self, dim: int, n_arms: int, alpha: float = 1.0, ridge: float = 1.0) -> None:
        if dim < 1 or n_arms < 1:
            raise ValueError("dim and n_arms must be >= 1")
        if ridge <= 0.0:
            raise ValueError("ridge must be > 0")
        self.dim = dim
        self.n_arms = n_arms
        self.alpha = float(alpha)
        self.ridge = float(ridge)
        self.a_inv: NDArray[np.float64] = np.zeros((n_arms, dim, dim))
        for k in range(n_arms):
            np.fill_diagonal(self.a_inv[k], 1.0 / ridge)
        self.b: NDArray[np.float64] = np.zeros((n_arms, dim))
        self.theta: NDArray[np.float64] = np.zeros((n_arms, dim))
        # A (K*d, d) view of the same memory: one gemv scores every arm.
        self._a_inv_flat = self.a_inv.reshape(n_arms * dim, dim)
        self._ax_flat: NDArray[np.float64] = np.empty(n_arms * dim)
        self._ax = self._ax_flat.reshape(n_arms, dim)
        self._width: NDArray[np.float64] = np.empty(n_arms)
        self._mean: NDArray[np.float64] = np.empty(n_arms)
        self._u: NDArray[np.float64] = np.empty(dim)

    def scores(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """UCB score of every arm for context ``x`` (a view into an internal buffer)."""
        np.dot(self._a_inv_flat, x, out=self._ax_flat)
        np.dot(self._ax, x, out=self._width)
        # Rounding can make x^T A^-1 x a hair negative for a tiny x; the true value is >= 0.
        np.maximum(self._width, 0.0, out=self._width)
        np.sqrt(self._width, out=self._width)
        np.dot(self.theta, x, out=self._mean)
        self._width *= self.alpha
        self._mean += self._width
        return self._mean

    def select(self, x: NDArray[np.float64]) -> int:
        """Index of the arm with the highest UCB score (lowest index on ties)."""
        return int(np.argmax(self.scores(x)))

    def update(self, arm: int, x: NDArray[np.float64], reward: float, weight: float = 1.0) -> None:
        """Add the observation ``(x, reward)`` with ``weight`` to ``arm``'s model."""
        a_inv = self.a_inv[arm]
        u = np.dot(a_inv, x, out=self._u)
        denom = 1.0 + weight * float(np.dot(x, u))
        # A^-1 is symmetric and C-contiguous, so its transpose is a Fortran-ordered view of
        # the same memory and dger can update it in place (overwrite_a) with no copy.
        dger(-weight / denom, u, u, a=a_inv.T, overwrite_a=True)
        self.b[arm] += (weight * reward) * x
        np.dot(a_inv, self.b[arm], out=self.theta[arm])
