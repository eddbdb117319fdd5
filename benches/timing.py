"""Per-call timing and the machine description printed with every benchmark run.

Every call is timed on its own with ``time.perf_counter_ns`` so the report can give a median
and a p90 per call; implementations of very different speed get different iteration counts
from one time budget, and their timed chunks are interleaved (round-robin) so that a burst of
load from another process on this shared machine hits all of them rather than one.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

__all__ = [
    "CallStats",
    "NumpyBlasThreads",
    "Timed",
    "describe_machine",
    "harness_floor_ns",
    "interleaved",
]

Step = Callable[[int], object]


@dataclass
class Timed:
    """One implementation's step function and the per-call samples collected for it."""

    name: str
    step: Step
    before_chunk: Callable[[], object] | None = None  # untimed, e.g. set BLAS threads
    iterations: int = 0
    next_index: int = 0
    samples_ns: list[int] = field(default_factory=list)
    cpu_ns: int = 0  # CPU time of the calling thread over the timed chunks
    cpu_calls: int = 0


@dataclass(frozen=True)
class CallStats:
    n: int
    median_us: float
    p90_us: float
    mean_us: float
    # Mean CPU time of the calling thread per call (CLOCK_THREAD_CPUTIME_ID over whole
    # chunks): time spent waiting for a core while another process runs is not counted, so
    # it is the contention-robust figure. Work done by other threads (NumPy's multithreaded
    # BLAS) is not counted either, which is why it is compared with single-threaded runs.
    cpu_us: float

    @classmethod
    def of(cls, samples_ns: Sequence[int], cpu_ns: int, cpu_calls: int) -> CallStats:
        a = np.asarray(samples_ns, dtype=np.float64) / 1000.0
        return cls(
            n=len(a),
            median_us=float(np.median(a)),
            p90_us=float(np.percentile(a, 90)),
            mean_us=float(a.mean()),
            cpu_us=cpu_ns / 1000.0 / max(cpu_calls, 1),
        )


def _run(t: Timed, count: int, n_contexts: int) -> None:
    if t.before_chunk is not None:
        t.before_chunk()
    step = t.step
    clock = time.perf_counter_ns
    out = t.samples_ns
    i = t.next_index
    cpu0 = time.thread_time_ns()
    for _ in range(count):
        t0 = clock()
        step(i)
        t1 = clock()
        out.append(t1 - t0)
        i += 1
        if i == n_contexts:
            i = 0
    t.cpu_ns += time.thread_time_ns() - cpu0
    t.cpu_calls += count
    t.next_index = i


def interleaved(
    impls: Sequence[Timed],
    n_contexts: int,
    budget_s: float,
    min_iter: int,
    max_iter: int,
    rounds: int = 5,
    warmup: int = 5,
) -> dict[str, CallStats]:
    """Time each implementation's step under a per-implementation budget.

    A few untimed-for-the-report warm-up calls estimate the cost per call, which fixes the
    iteration count (clamped to ``[min_iter, max_iter]``); the timed calls then run in
    ``rounds`` interleaved chunks.
    """
    for t in impls:
        t0 = time.perf_counter_ns()
        _run(t, warmup, n_contexts)
        per_call_s = max((time.perf_counter_ns() - t0) / 1e9 / warmup, 1e-7)
        t.samples_ns.clear()
        t.cpu_ns = t.cpu_calls = 0
        t.iterations = int(min(max(budget_s / per_call_s, min_iter), max_iter))
    for r in range(rounds):
        for t in impls:
            lo = t.iterations * r // rounds
            hi = t.iterations * (r + 1) // rounds
            _run(t, hi - lo, n_contexts)
    return {t.name: CallStats.of(t.samples_ns, t.cpu_ns, t.cpu_calls) for t in impls}


class NumpyBlasThreads:
    """Switch the thread count of NumPy's own BLAS between timed chunks (about 1 us a switch).

    ``set(None)`` restores what NumPy had when this object was made ("as installed").
    """

    def __init__(self) -> None:
        self._lib: Any = None
        self.default: int | None = None
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return
        for lib in ThreadpoolController().lib_controllers:
            if lib.user_api == "blas" and "numpy.libs" in str(lib.filepath):
                self._lib = lib
                self.default = int(lib.num_threads)

    @property
    def available(self) -> bool:
        return self._lib is not None

    def set(self, n: int | None) -> None:
        if self._lib is not None:
            self._lib.set_num_threads(self.default if n is None else n)


def harness_floor_ns(n: int = 20000) -> float:
    """Median cost of timing an empty step: the overhead every column carries."""

    def empty(i: int) -> None:
        return None

    t = Timed("floor", empty)
    _run(t, n, n)
    return float(np.median(t.samples_ns))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blas_description() -> str:
    """Which BLAS libraries are loaded, with kernel and threads (threadpoolctl if installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed; see numpy.show_config()"
    parts = []
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        path = str(info.get("filepath"))
        owner = "numpy" if "numpy.libs" in path else "scipy" if "scipy.libs" in path else path
        parts.append(
            f"[{owner}] {info.get('internal_api')} {info.get('version')} "
            f"kernel={info.get('architecture')} threads={info.get('num_threads')}"
        )
    return "; ".join(parts) or "no BLAS loaded"


def describe_machine() -> list[str]:
    load = os.getloadavg()
    env = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    return [
        f"cpu: {_cpu_model()} x{os.cpu_count()}; load avg (1/5/15 min): "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"python {platform.python_version()}; numpy {np.__version__}; "
        f"mabwiser {_version('mabwiser')}; vowpalwabbit {_version('vowpalwabbit')}; "
        f"conduit-sidecar {_version('conduit-sidecar')}",
        f"BLAS: {blas_description()}; " + ", ".join(f"{k}={v}" for k, v in env.items()),
    ]
