"""A tight loop of select+update through the Python API (LinUCB, d=64, K=5 by default), for a
sampling profiler to split a call between the kernels and the Python binding:

    perf record -e cpu-clock -F 5000 -o /tmp/core.data \\
        .venv/bin/python benches/profile_core.py --calls 400000
    perf report -i /tmp/core.data --sort dso,sym --stdio | head -40

Prints the mean wall time per select+update (profiler overhead included).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from baselines import ConduitArms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--arms", type=int, default=5)
    args = parser.parse_args()
    arms = ConduitArms("linucb", args.dim, args.arms, alpha=1.0, ridge=1.0, seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, args.dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = [x[i] for i in range(len(x))]
    rewards = rng.random((len(x), args.arms)).tolist()
    select, update, index = arms.policy.select, arms.policy.update, arms.index
    started = time.perf_counter()
    for k in range(args.calls):
        i = k % len(rows)
        arm = select(rows[i]).arm
        update(arm, rows[i], rewards[i][index[arm]])
    elapsed = time.perf_counter() - started
    print(f"{elapsed / args.calls * 1e6:.2f} us per select+update")


if __name__ == "__main__":
    main()
