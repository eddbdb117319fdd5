"""Speed of the Rust core through its Python API, side by side with the baselines (issue 2).

One command, one process, one run::

    .venv/bin/python benches/bench_core.py

times ``select``, ``update`` and ``select+update`` at d in {16, 64, 386} and K in {5, 20} for
Conduit's LinUCB (``conduit_sidecar.bandit``), the vectorised NumPy LinUCB of
``numpy_linucb.py``, MABWiser's LinUCB, Vowpal Wabbit ``--cb_explore_adf`` and a naive f64 C
loop compiled with ``gcc -O3`` now, then prints per-call medians (p90), the ratios and the
verdict on each target of the issue. This is a benchmark, not a test: it never fails a build.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from baselines import ConduitArms, MabwiserLinUCB, VowpalCB, conduit_available
from naive_c import CFLAGS, NaiveCLinUCB, compile_naive_c, gcc_version
from numpy.typing import NDArray
from numpy_linucb import NumpyLinUCB, pin_rank1_blas
from timing import (
    CallStats,
    NumpyBlasThreads,
    Timed,
    describe_machine,
    harness_floor_ns,
    interleaved,
)

OPS = ("select", "update", "select+update")
COLUMNS = ("conduit", "numpy", "numpy_1t", "mabwiser", "vw", "c_f64")
# Targets compare with the faster of the two NumPy runs (BLAS threads as installed, and one
# thread): on a loaded 2-core machine either can win, and the stricter baseline is the fair one.
BEST_NUMPY = "numpy_best"
RATIOS = (BEST_NUMPY, "mabwiser", "vw", "c_f64")
ALPHA = 1.0
RIDGE = 1.0

Steps = dict[str, Callable[[int], object]]


@dataclass
class Workload:
    """Everything the timed loops read, generated up front so no generation is timed."""

    dim: int
    n_arms: int
    rows: list[NDArray[np.float64]]  # unit-norm contexts, each a C-contiguous (d,) view
    rows2d: list[NDArray[np.float64]]  # the same contexts as (1, d) views, for MABWiser
    upd_arms: list[int]  # arm updated by the update-only op
    upd_rewards: list[float]
    table: list[list[float]]  # reward of every arm for each context (select+update)
    uniforms: list[float]  # VW samples its arm from its pmf with these
    prime_x: NDArray[np.float64]
    prime_arms: list[int]
    prime_rewards: list[float]


def make_workload(dim: int, n_arms: int, n_contexts: int, seed: int) -> Workload:
    rng = np.random.default_rng([seed, dim, n_arms])
    x = rng.normal(size=(n_contexts, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n_prime = 4 * n_arms
    prime_x = rng.normal(size=(n_prime, dim))
    prime_x /= np.linalg.norm(prime_x, axis=1, keepdims=True)
    return Workload(
        dim=dim,
        n_arms=n_arms,
        rows=[x[i] for i in range(n_contexts)],
        rows2d=[x[i : i + 1] for i in range(n_contexts)],
        upd_arms=rng.integers(n_arms, size=n_contexts).tolist(),
        upd_rewards=rng.random(n_contexts).tolist(),
        table=rng.random((n_contexts, n_arms)).tolist(),
        uniforms=rng.random(n_contexts).tolist(),
        prime_x=prime_x,
        prime_arms=[i % n_arms for i in range(n_prime)],
        prime_rewards=rng.random(n_prime).tolist(),
    )


def conduit_steps(w: Workload) -> Steps:
    c = ConduitArms("linucb", w.dim, w.n_arms, alpha=ALPHA, ridge=RIDGE, seed=0)
    for x, a, r in zip(w.prime_x, w.prime_arms, w.prime_rewards, strict=True):
        c.update(a, np.ascontiguousarray(x), r)
    select, update, index = c.policy.select, c.policy.update, c.index
    rows, table, rewards = w.rows, w.table, w.upd_rewards
    upd_names = [c.names[a] for a in w.upd_arms]

    def s(i: int) -> None:
        select(rows[i])

    def u(i: int) -> None:
        update(upd_names[i], rows[i], rewards[i])

    def su(i: int) -> None:
        x = rows[i]
        arm = select(x).arm
        update(arm, x, table[i][index[arm]])

    return {"select": s, "update": u, "select+update": su}


def _indexed_steps(model: NumpyLinUCB | NaiveCLinUCB, w: Workload) -> Steps:
    for x, a, r in zip(w.prime_x, w.prime_arms, w.prime_rewards, strict=True):
        model.update(a, np.ascontiguousarray(x), r)
    select, update = model.select, model.update
    rows, table, arms, rewards = w.rows, w.table, w.upd_arms, w.upd_rewards

    def s(i: int) -> None:
        select(rows[i])

    def u(i: int) -> None:
        update(arms[i], rows[i], rewards[i])

    def su(i: int) -> None:
        x = rows[i]
        a = select(x)
        update(a, x, table[i][a])

    return {"select": s, "update": u, "select+update": su}


def mabwiser_steps(w: Workload) -> Steps:
    m = MabwiserLinUCB(
        w.n_arms, ALPHA, RIDGE, 0, w.prime_arms, w.prime_rewards, np.asarray(w.prime_x)
    )
    predict, partial_fit, index = m.mab.predict, m.mab.partial_fit, m.index
    rows2d, table, rewards = w.rows2d, w.table, w.upd_rewards
    upd_names = [m.names[a] for a in w.upd_arms]

    def s(i: int) -> None:
        predict(rows2d[i])

    def u(i: int) -> None:
        partial_fit([upd_names[i]], [rewards[i]], rows2d[i])

    def su(i: int) -> None:
        x = rows2d[i]
        arm = predict(x)
        partial_fit([arm], [table[i][index[arm]]], x)

    return {"select": s, "update": u, "select+update": su}


def vw_steps(w: Workload) -> Steps:
    v = VowpalCB(w.n_arms, seed=0)
    k = w.n_arms
    for x, a, r in zip(w.prime_x, w.prime_arms, w.prime_rewards, strict=True):
        v.learn(v.labelled(v.shared_line(x), a, r, 1.0 / k))
    # VW reads text: formatting the contexts is input preparation, done here untimed.
    shared = [v.shared_line(x) for x in w.rows]
    examples = [v.example(sh) for sh in shared]
    upd_examples = [
        v.labelled(sh, a, r, 1.0 / k)
        for sh, a, r in zip(shared, w.upd_arms, w.upd_rewards, strict=True)
    ]
    predict, learn, labelled, sample = v.vw.predict, v.vw.learn, v.labelled, v.sample
    table, uniforms = w.table, w.uniforms

    def s(i: int) -> None:
        predict(examples[i])

    def u(i: int) -> None:
        learn(upd_examples[i])

    def su(i: int) -> None:
        pmf = predict(examples[i])
        a = sample(pmf, uniforms[i])
        learn(labelled(shared[i], a, table[i][a], pmf[a]))

    return {"select": s, "update": u, "select+update": su}


@dataclass(frozen=True)
class Cell:
    op: str
    dim: int
    n_arms: int
    stats: dict[str, CallStats]

    def median_us(self, column: str) -> float | None:
        if column == BEST_NUMPY:
            found = [self.stats[c].median_us for c in ("numpy", "numpy_1t") if c in self.stats]
            return min(found) if found else None
        return self.stats[column].median_us if column in self.stats else None

    def ratio(self, column: str) -> float | None:
        mine, theirs = self.median_us("conduit"), self.median_us(column)
        if mine is None or theirs is None:
            return None
        return theirs / mine


@dataclass(frozen=True)
class Target:
    dim: int
    n_arms: int
    column: str
    min_ratio: float  # column median / conduit median must be >= this

    def label(self) -> str:
        where = f"select+update d={self.dim} K={self.n_arms}"
        return f"{where}: {self.column}/conduit >= {self.min_ratio:g}"


TARGETS = (
    Target(64, 5, BEST_NUMPY, 6.0),
    Target(386, 5, BEST_NUMPY, 2.0),
    Target(386, 5, "mabwiser", 40.0),
    Target(386, 5, "c_f64", 1.0),
    Target(386, 20, BEST_NUMPY, 2.0),
    Target(386, 20, "mabwiser", 40.0),
    Target(386, 20, "c_f64", 1.0),
)


# select+update per call as quoted in issue 2 ("measured here for reference"), printed next
# to this run's own baselines so the gap between the two is visible. Not used for verdicts.
ISSUE_REFERENCE_US = {
    (64, 5, BEST_NUMPY): 55.0,
    (386, 5, BEST_NUMPY): 330.0,
    (386, 5, "mabwiser"): 14500.0,
    (386, 5, "c_f64"): 450.0,
}


def _fmt(s: CallStats | None) -> str:
    if s is None:
        return "-"
    return f"{s.median_us:.1f} ({s.p90_us:.1f})"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _verdicts(cell: Cell) -> str:
    out = []
    for t in TARGETS:
        if (cell.op, cell.dim, cell.n_arms) != ("select+update", t.dim, t.n_arms):
            continue
        r = cell.ratio(t.column)
        mark = "n/a" if r is None else ("PASS" if r >= t.min_ratio else "FAIL")
        out.append(f"{t.column}>={t.min_ratio:g}x {mark}")
    return ", ".join(out)


def cpu_ratio(cell: Cell, column: str) -> float | None:
    """Ratio of calling-thread CPU time per call; NumPy means its single-threaded run."""
    column = "numpy_1t" if column == BEST_NUMPY else column
    if "conduit" not in cell.stats or column not in cell.stats:
        return None
    return cell.stats[column].cpu_us / cell.stats["conduit"].cpu_us


def print_cpu_table(cells: list[Cell]) -> None:
    cols = ("conduit", "numpy_1t", "mabwiser", "vw", "c_f64")
    head = ["op", "d", "K", *(f"{c} cpu us" for c in cols)]
    head += ["numpy_1t/conduit", "mabwiser/conduit", "C/conduit"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for c in cells:
        row = [c.op, str(c.dim), str(c.n_arms)]
        row += [f"{c.stats[k].cpu_us:.1f}" if k in c.stats else "-" for k in cols]
        row += [_fmt_ratio(cpu_ratio(c, k)) for k in (BEST_NUMPY, "mabwiser", "c_f64")]
        print("| " + " | ".join(row) + " |")


def print_table(cells: list[Cell]) -> None:
    head = [
        "op",
        "d",
        "K",
        "conduit us",
        "numpy us",
        "numpy 1T us",
        "mabwiser us",
        "vw us",
        "C f64 us",
        "best numpy/conduit",
        "mabwiser/conduit",
        "vw/conduit",
        "C/conduit",
        "targets",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for c in cells:
        row = [
            c.op,
            str(c.dim),
            str(c.n_arms),
            *(_fmt(c.stats.get(col)) for col in COLUMNS),
            *(_fmt_ratio(c.ratio(col)) for col in RATIOS),
            _verdicts(c),
        ]
        print("| " + " | ".join(row) + " |")


def binding_overhead(budget_s: float) -> dict[str, CallStats]:
    """Conduit on the smallest problem it accepts: mostly the cost of crossing into Rust."""
    for k in (1, 2):
        try:
            w = make_workload(16, k, 512, seed=7)
            steps = conduit_steps(w)
        except ValueError:
            continue
        impls = [Timed(f"{op} d=16 K={k}", steps[op]) for op in ("select", "update")]
        return interleaved(impls, 512, budget_s, 200, 20000)
    return {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--dims", type=int, nargs="+", default=[16, 64, 386])
    p.add_argument("--arms", type=int, nargs="+", default=[5, 20])
    p.add_argument("--budget", type=float, default=1.0, help="seconds per contender per cell")
    p.add_argument("--min-iter", type=int, default=15)
    p.add_argument("--max-iter", type=int, default=3000)
    p.add_argument("--contexts", type=int, default=2048, help="pre-generated contexts per cell")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args(argv)

    started = time.time()
    print("# Conduit core benchmark (issue 2)")
    print("#", pin_rank1_blas())
    blas = NumpyBlasThreads()
    print(f"# NumPy BLAS threads: numpy column {blas.default} (as installed), numpy_1t column 1")
    for line in describe_machine():
        print("#", line)
    missing = conduit_available()
    if missing is not None:
        print(f"# conduit core NOT available ({missing}); baselines only, targets n/a")
    try:
        lib = compile_naive_c()
        print(f"# naive C reference: {gcc_version()} {' '.join(CFLAGS)}")
    except RuntimeError as exc:
        lib = None
        print(f"# naive C reference unavailable: {exc}")
    floor_ns = harness_floor_ns()
    print(f"# harness floor (timing an empty step, in every column): {floor_ns / 1000:.3f} us")
    print("# cells: median (p90) microseconds per call; ratios of medians")

    cells: list[Cell] = []
    for dim in args.dims:
        for k in args.arms:
            w = make_workload(dim, k, args.contexts, seed=0)
            contenders: dict[str, Steps] = {}
            if missing is None:
                contenders["conduit"] = conduit_steps(w)
            contenders["numpy"] = _indexed_steps(NumpyLinUCB(dim, k, ALPHA, RIDGE), w)
            if blas.available:
                contenders["numpy_1t"] = _indexed_steps(NumpyLinUCB(dim, k, ALPHA, RIDGE), w)
            contenders["mabwiser"] = mabwiser_steps(w)
            contenders["vw"] = vw_steps(w)
            if lib is not None:
                contenders["c_f64"] = _indexed_steps(NaiveCLinUCB(lib, dim, k, ALPHA, RIDGE), w)
            for op in OPS:
                impls = [
                    Timed(name, steps[op], partial(blas.set, 1 if name == "numpy_1t" else None))
                    for name, steps in contenders.items()
                ]
                stats = interleaved(impls, args.contexts, args.budget, args.min_iter, args.max_iter)
                cells.append(Cell(op, dim, k, stats))
                print(
                    f"#   done {op:<13} d={dim:<3} K={k:<2} "
                    + " ".join(f"{n}={s.median_us:.1f}us/n={s.n}" for n, s in stats.items()),
                    flush=True,
                )

    print()
    print_table(cells)
    print()
    print("# CPU time of the calling thread per call (mean over the timed chunks); waiting")
    print("# for a core while other processes run is not counted. MABWiser's BLAS threads")
    print("# are not counted either, so its column is an underestimate.")
    print_cpu_table(cells)
    print()
    verdicts: list[tuple[str, str]] = []
    for t in TARGETS:
        cell = next(
            (c for c in cells if (c.op, c.dim, c.n_arms) == ("select+update", t.dim, t.n_arms)),
            None,
        )
        r = None if cell is None else cell.ratio(t.column)
        mark = "n/a" if r is None else ("PASS" if r >= t.min_ratio else "FAIL")
        verdicts.append((t.label(), mark))
        cr = None if cell is None else cpu_ratio(cell, t.column)
        print(f"{mark:<4} {t.label()}: measured {_fmt_ratio(r)} (thread CPU: {_fmt_ratio(cr)})")
    for (dim, k, column), ref_us in ISSUE_REFERENCE_US.items():
        cell = next(
            (c for c in cells if (c.op, c.dim, c.n_arms) == ("select+update", dim, k)), None
        )
        mine = None if cell is None else cell.median_us("conduit")
        here = None if cell is None else cell.median_us(column)
        if mine is not None and here is not None:
            print(
                f"info d={dim} K={k} {column}: issue's figure {ref_us:g} us, measured here "
                f"{here:.1f} us; issue's figure / conduit = {ref_us / mine:.2f}x"
            )

    overhead: dict[str, CallStats] = {}
    if missing is None:
        overhead = binding_overhead(min(args.budget, 0.3))
        for name, s in overhead.items():
            print(f"# binding floor, conduit {name}: {_fmt(s)} us")
    print(f"# load avg at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"# total wall time: {time.time() - started:.0f} s")

    if args.json is not None:
        payload = {
            "machine": describe_machine(),
            "harness_floor_us": floor_ns / 1000,
            "cells": [
                {
                    "op": c.op,
                    "dim": c.dim,
                    "n_arms": c.n_arms,
                    "stats": {k: asdict(v) for k, v in c.stats.items()},
                }
                for c in cells
            ],
            "targets": [{"target": label, "verdict": mark} for label, mark in verdicts],
            "binding_floor": {k: asdict(v) for k, v in overhead.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
