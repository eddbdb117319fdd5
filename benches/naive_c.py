"""Compile ``naive_c_linucb.c`` with ``gcc -O3`` at bench time and drive it through ctypes.

The C reference is built fresh in a temporary directory on every run, so what is measured is
what this machine's gcc makes of the source today; nothing binary is committed.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["CFLAGS", "NaiveCLinUCB", "compile_naive_c", "gcc_version"]

SOURCE = Path(__file__).with_name("naive_c_linucb.c")
CFLAGS = ("-O3", "-fPIC", "-shared")

_F64P = ctypes.POINTER(ctypes.c_double)


def gcc_version() -> str | None:
    """First line of ``gcc --version``, or None when gcc is not installed."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    out = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def compile_naive_c(build_dir: Path | None = None) -> ctypes.CDLL:
    """Build the shared library and load it. Raises RuntimeError if gcc is missing or fails."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc not found: the naive C reference cannot be built")
    out_dir = Path(tempfile.mkdtemp(prefix="conduit_naive_c_")) if build_dir is None else build_dir
    lib_path = out_dir / "libnaive_linucb.so"
    cmd = [gcc, *CFLAGS, "-o", str(lib_path), str(SOURCE), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"gcc failed ({' '.join(cmd)}):\n{done.stderr}")
    lib = ctypes.CDLL(str(lib_path))
    lib.naive_linucb_select.restype = ctypes.c_long
    lib.naive_linucb_select.argtypes = [
        _F64P,
        _F64P,
        ctypes.c_void_p,
        _F64P,
        _F64P,
        ctypes.c_long,
        ctypes.c_long,
        ctypes.c_double,
    ]
    lib.naive_linucb_update.restype = None
    lib.naive_linucb_update.argtypes = [
        _F64P,
        _F64P,
        _F64P,
        ctypes.c_void_p,
        _F64P,
        ctypes.c_long,
        ctypes.c_long,
        ctypes.c_double,
        ctypes.c_double,
    ]
    return lib


def _ptr(a: NDArray[np.float64]) -> ctypes._Pointer[ctypes.c_double]:
    return a.ctypes.data_as(_F64P)


class NaiveCLinUCB:
    """The C reference with its state in NumPy arrays; same maths as ``NumpyLinUCB``.

    The pointers to the state are made once; per call only the context's address is read
    (``x.ctypes.data``, a C-contiguous float64 array is required), so the ctypes overhead
    (2-3 us) is the only Python cost on top of the C loop.
    """

    def __init__(
        self, lib: ctypes.CDLL, dim: int, n_arms: int, alpha: float = 1.0, ridge: float = 1.0
    ) -> None:
        self.dim = dim
        self.n_arms = n_arms
        self.alpha = float(alpha)
        self._select = lib.naive_linucb_select
        self._update = lib.naive_linucb_update
        self.a_inv: NDArray[np.float64] = np.zeros((n_arms, dim, dim))
        for k in range(n_arms):
            np.fill_diagonal(self.a_inv[k], 1.0 / ridge)
        self.b: NDArray[np.float64] = np.zeros((n_arms, dim))
        self.theta: NDArray[np.float64] = np.zeros((n_arms, dim))
        self.scores: NDArray[np.float64] = np.zeros(n_arms)
        self._scratch: NDArray[np.float64] = np.zeros(dim)
        self._p_a_inv = _ptr(self.a_inv)
        self._p_b = _ptr(self.b)
        self._p_theta = _ptr(self.theta)
        self._p_scores = _ptr(self.scores)
        self._p_scratch = _ptr(self._scratch)

    def select(self, x: NDArray[np.float64]) -> int:
        return int(
            self._select(
                self._p_a_inv,
                self._p_theta,
                x.ctypes.data,
                self._p_scores,
                self._p_scratch,
                self.n_arms,
                self.dim,
                self.alpha,
            )
        )

    def update(self, arm: int, x: NDArray[np.float64], reward: float, weight: float = 1.0) -> None:
        self._update(
            self._p_a_inv,
            self._p_b,
            self._p_theta,
            x.ctypes.data,
            self._p_scratch,
            arm,
            self.dim,
            reward,
            weight,
        )
