"""Cumulative regret of Conduit's policies against the baselines (issue 2).

    .venv/bin/python benches/regret.py

5 arms, d=16, 5,000 rounds, seeds 0-4. Each seed draws a linear problem: context
``x = [1, z] / sqrt(2)`` with ``z`` a random unit vector in R^15 (the first component is the
bias term, so ``||x|| = 1``), and arm k's expected reward ``mu_k(x) = theta_k . x =
0.5 + 0.4 w_k . z`` with ``w_k`` a random unit vector, so ``mu`` lies in [0.1, 0.9]. The
observed reward is Bernoulli(``mu``), drawn from uniforms shared by all policies (common
random numbers), so every policy faces exactly the same contexts and the same luck.

Regret is the pseudo-regret ``sum_t max_k mu_k(x_t) - mu_{a_t}(x_t)``. Contenders: Conduit
LinUCB and Conduit linear Thompson sampling (``conduit_sidecar.bandit``), the NumPy LinUCB of
``numpy_linucb.py`` with the same alpha, MABWiser's LinUCB with the same alpha, Vowpal Wabbit
``--cb_explore_adf`` and uniform random. Targets: Conduit LinUCB within 15% of NumPy LinUCB,
and below VW.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from baselines import VW_ARGS, ConduitArms, MabwiserLinUCB, VowpalCB, conduit_available
from numpy.typing import NDArray
from numpy_linucb import NumpyLinUCB, pin_rank1_blas
from timing import describe_machine

if TYPE_CHECKING:
    from conduit_sidecar.bandit import PolicyKind

N_ARMS = 5
DIM = 16
# Not a target, shown for context: the strongest of VW's stock explorers tried here
# (default epsilon-greedy, --epsilon 0.01, --cover 3, --squarecb) on this problem.
VW_SQUARECB = VW_ARGS + " --squarecb"


@dataclass(frozen=True)
class Problem:
    contexts: NDArray[np.float64]  # (T, d), unit norm, first component constant
    mu: NDArray[np.float64]  # (T, K) expected reward of every arm for every context
    coins: NDArray[np.float64]  # (T, K) uniforms: reward of arm k at t is coins[t, k] < mu
    explore: NDArray[np.float64]  # (T,) uniforms for policies that sample (VW, random)

    def reward(self, t: int, arm: int) -> float:
        return 1.0 if self.coins[t, arm] < self.mu[t, arm] else 0.0


def make_problem(seed: int, rounds: int) -> Problem:
    rng = np.random.default_rng([seed, DIM, N_ARMS, rounds])
    w = rng.normal(size=(N_ARMS, DIM - 1))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    theta = np.sqrt(2.0) * np.hstack([np.full((N_ARMS, 1), 0.5), 0.4 * w])
    z = rng.normal(size=(rounds, DIM - 1))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    x = np.hstack([np.ones((rounds, 1)), z]) / np.sqrt(2.0)
    mu = x @ theta.T
    return Problem(
        contexts=np.ascontiguousarray(x),
        mu=mu,
        coins=rng.random((rounds, N_ARMS)),
        explore=rng.random(rounds),
    )


# A runner plays every round of one problem and returns the arm it chose each round.
Runner = Callable[[Problem, int, float], list[int]]


def _play(
    p: Problem, select: Callable[[int], int], update: Callable[[int, int, float], None]
) -> list[int]:
    chosen = []
    for t in range(len(p.contexts)):
        a = select(t)
        update(t, a, p.reward(t, a))
        chosen.append(a)
    return chosen


def run_conduit(kind: PolicyKind) -> Runner:
    def run(p: Problem, seed: int, alpha: float) -> list[int]:
        c = ConduitArms(kind, DIM, N_ARMS, alpha=alpha, ridge=1.0, seed=seed)
        x = p.contexts
        return _play(p, lambda t: c.select(x[t]), lambda t, a, r: c.update(a, x[t], r))

    return run


def run_numpy(p: Problem, seed: int, alpha: float) -> list[int]:
    m = NumpyLinUCB(DIM, N_ARMS, alpha=alpha, ridge=1.0)
    x = p.contexts
    return _play(p, lambda t: m.select(x[t]), lambda t, a, r: m.update(a, x[t], r))


def run_mabwiser(p: Problem, seed: int, alpha: float) -> list[int]:
    x = p.contexts
    # MABWiser cannot predict before its first fit. With every model at its prior, LinUCB
    # scores all arms equally and picks the first, so round 0 plays arm 0 (as NumPy does).
    first = p.reward(0, 0)
    m = MabwiserLinUCB(N_ARMS, alpha, 1.0, seed, [0], [first], x[0:1])
    chosen = [0]
    for t in range(1, len(x)):
        a = m.select(x[t : t + 1])
        m.update(a, x[t : t + 1], p.reward(t, a))
        chosen.append(a)
    return chosen


def run_vw(args: str) -> Runner:
    def run(p: Problem, seed: int, alpha: float) -> list[int]:
        v = VowpalCB(N_ARMS, seed, args)
        chosen = []
        for t in range(len(p.contexts)):
            shared = v.shared_line(p.contexts[t])
            pmf = v.pmf(shared)
            a = v.sample(pmf, float(p.explore[t]))
            v.learn(v.labelled(shared, a, p.reward(t, a), pmf[a]))
            chosen.append(a)
        v.close()
        return chosen

    return run


def run_random(p: Problem, seed: int, alpha: float) -> list[int]:
    return [min(int(u * N_ARMS), N_ARMS - 1) for u in p.explore]


def cumulative_regret(p: Problem, chosen: list[int]) -> NDArray[np.float64]:
    best = p.mu.max(axis=1)
    got = p.mu[np.arange(len(chosen)), chosen]
    return np.cumsum(best - got)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--alpha", type=float, default=1.0, help="LinUCB alpha, same for all")
    ap.add_argument("--plot", type=Path, help="save mean cumulative regret curves (PNG)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv)

    started = time.time()
    print(f"# Conduit regret benchmark (issue 2): K={N_ARMS}, d={DIM}, T={args.rounds}")
    print("#", pin_rank1_blas())
    for line in describe_machine():
        print("#", line)
    print(f"# alpha={args.alpha} ridge=1.0 for every LinUCB")
    print(f"# VW args: {VW_ARGS} --random_seed <seed> (vw_squarecb adds --squarecb, info only)")

    runners: dict[str, Runner] = {}
    missing = conduit_available()
    if missing is None:
        runners["conduit_linucb"] = run_conduit("linucb")
        runners["conduit_lin_ts"] = run_conduit("lin_ts")
    else:
        print(f"# conduit core NOT available ({missing}); baselines only, targets n/a")
    runners.update(
        numpy_linucb=run_numpy,
        mabwiser_linucb=run_mabwiser,
        vw_cb_explore_adf=run_vw(VW_ARGS),
        vw_squarecb=run_vw(VW_SQUARECB),
        uniform_random=run_random,
    )

    final: dict[str, list[float]] = {name: [] for name in runners}
    curves: dict[str, list[NDArray[np.float64]]] = {name: [] for name in runners}
    for seed in args.seeds:
        p = make_problem(seed, args.rounds)
        for name, run in runners.items():
            t0 = time.perf_counter()
            reg = cumulative_regret(p, run(p, seed, args.alpha))
            final[name].append(float(reg[-1]))
            curves[name].append(reg)
            took_s = time.perf_counter() - t0
            print(f"#   seed {seed} {name:<18} regret {reg[-1]:8.1f} ({took_s:.1f} s)", flush=True)

    print()
    head = ["policy", *(f"seed {s}" for s in args.seeds), "mean", "std"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, values in final.items():
        a = np.asarray(values)
        std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
        cells = [name, *(f"{v:.1f}" for v in values), f"{a.mean():.1f}", f"{std:.1f}"]
        print("| " + " | ".join(cells) + " |")
    print()

    mean = {name: float(np.mean(v)) for name, v in final.items()}
    verdicts = []
    if "conduit_linucb" in mean:
        ratio = mean["conduit_linucb"] / mean["numpy_linucb"]
        ok = ratio <= 1.15
        verdicts.append(("Conduit LinUCB within 15% of NumPy LinUCB (same alpha)", ok, ratio))
        vw_ratio = mean["conduit_linucb"] / mean["vw_cb_explore_adf"]
        verdicts.append(("Conduit LinUCB below VW --cb_explore_adf", vw_ratio < 1.0, vw_ratio))
        for label, ok, r in verdicts:
            print(f"{'PASS' if ok else 'FAIL'} {label}: regret ratio {r:.3f}")
        sq = mean["conduit_linucb"] / mean["vw_squarecb"]
        print(f"info Conduit LinUCB / VW --cb_explore_adf --squarecb regret ratio {sq:.3f}")
    else:
        print("n/a  targets need the Conduit core")
    print(f"# total wall time: {time.time() - started:.0f} s")

    if args.plot is not None:
        _plot(curves, args.plot, args.rounds)
        print(f"# plot written to {args.plot}")
    if args.json is not None:
        payload = {
            "machine": describe_machine(),
            "alpha": args.alpha,
            "rounds": args.rounds,
            "seeds": args.seeds,
            "final_regret": final,
            "targets": [{"target": lb, "pass": ok, "ratio": r} for lb, ok, r in verdicts],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def _plot(curves: dict[str, list[NDArray[np.float64]]], path: Path, rounds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    t = np.arange(1, rounds + 1)
    for name, regs in curves.items():
        stack = np.vstack(regs)
        m, s = stack.mean(axis=0), stack.std(axis=0)
        ax.plot(t, m, label=name)
        ax.fill_between(t, m - s, m + s, alpha=0.15)
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative pseudo-regret (mean +- std over seeds)")
    ax.set_title(f"K={N_ARMS}, d={DIM}, linear Bernoulli rewards")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
