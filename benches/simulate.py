"""Learning simulation: does the router find the cheapest model that does the job?

A synthetic workload with three models from the bundled catalogue (its real prices and
expected latencies) and three query categories whose texts come from disjoint word lists.
Each model has an assumed true quality per category (below); feedback is a thumbs up/down
drawn from it and sent through `Router.update` (the spec's immediate-feedback pattern) with
the balanced reward. Every policy is compared with always-strong, always-cheap, random and
an oracle that knows the expected reward of every (category, model).

    .venv/bin/python benches/simulate.py [--rounds 4000] [--seeds 3]

Prints a table (mean cost per query, mean expected quality and reward, routing shares, regret
against the oracle) and writes the learning curves to benches/results/learning_curves.png.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from conduit_sidecar import PolicyConfig, Query, Router
from conduit_sidecar.models import lookup
from conduit_sidecar.reward import PRESETS, compose_reward

CHEAP, MID, STRONG = "llama-3.1-8b", "gpt-4o-mini", "claude-sonnet-4"
MODELS = (CHEAP, MID, STRONG)
SPECS = {m: lookup(m) for m in MODELS}

# Assumed P(answer is good) per category and model: a small model handles chit-chat, a mid
# model handles explanations, only the frontier model reliably handles proofs and code.
QUALITY = {
    "easy": {CHEAP: 0.88, MID: 0.92, STRONG: 0.95},
    "medium": {CHEAP: 0.45, MID: 0.85, STRONG: 0.92},
    "hard": {CHEAP: 0.10, MID: 0.40, STRONG: 0.90},
}
MIX = {"easy": 0.5, "medium": 0.3, "hard": 0.2}
OUTPUT_TOKENS = {"easy": 120, "medium": 400, "hard": 800}
WORDS = {
    "easy": "hello thanks weather today capital city translate spell synonym recipe birthday "
    "movie song colour animal greeting holiday joke".split(),
    "medium": "summarise explain article email paragraph compare outline history product "
    "review meeting notes letter describe rewrite plan".split(),
    "hard": "prove theorem derive asymptotic complexity eigenvalue concurrency deadlock "
    "invariant induction lemma optimise gradient compiler bijection topology".split(),
}
WEIGHTS = PRESETS["balanced"]
# Every policy with the PolicyConfig defaults, plus the two contextual ones with narrower
# exploration (the defaults explore for a long time on rewards confined to [0, 1]).
POLICIES: dict[str, dict[str, float]] = {
    "linucb": {},
    "lin_ts": {},
    "beta_ts": {},
    "ucb1": {},
    "epsilon_greedy": {},
    "linucb a=0.5": {"alpha": 0.5},
    "lin_ts v=0.2": {"ts_scale": 0.2},
}
BASELINES = ("always-strong", "always-cheap", "random", "oracle")
WINDOW = 200


def call_cost_usd(model: str, text: str, category: str) -> float:
    spec = SPECS[model]
    return spec.cost_usd(len(text) // 4 + 1, OUTPUT_TOKENS[category])


def call_latency_s(model: str, category: str) -> float:
    # Expected latency is quoted for ~256 output tokens; decoding time scales with length.
    return SPECS[model].expected_latency_s * (0.5 + 0.5 * OUTPUT_TOKENS[category] / 256)


@dataclass
class Round:
    category: str
    text: str
    draw: float  # uniform draw deciding thumbs up/down, shared by every policy


def workload(rounds: int, seed: int) -> list[Round]:
    rng = random.Random(seed)
    categories = list(MIX)
    out = []
    for _ in range(rounds):
        category = rng.choices(categories, weights=list(MIX.values()))[0]
        words = rng.choices(WORDS[category], k=rng.randint(5, 12))
        out.append(Round(category, " ".join(words), rng.random()))
    return out


def expected_reward(model: str, r: Round) -> float:
    return compose_reward(
        WEIGHTS,
        QUALITY[r.category][model],
        call_cost_usd(model, r.text, r.category),
        call_latency_s(model, r.category),
    )


def oracle_choice(r: Round) -> str:
    return max(MODELS, key=lambda m: expected_reward(m, r))


async def play(name: str, rounds: list[Round], seed: int) -> list[str]:
    """The model chosen in each round by `name` (a policy kind or a baseline)."""
    if name == "always-strong":
        return [STRONG] * len(rounds)
    if name == "always-cheap":
        return [CHEAP] * len(rounds)
    if name == "oracle":
        return [oracle_choice(r) for r in rounds]
    kind = name.split()[0]
    config = PolicyConfig(kind=kind, seed=seed, **POLICIES.get(name, {}))  # type: ignore[arg-type]
    router = Router(list(MODELS), policy=config)
    chosen = []
    for r in rounds:
        decision = await router.route(Query(text=r.text))
        model = decision.selected_model
        good = r.draw < QUALITY[r.category][model]
        await router.update(
            model_id=model,
            cost=call_cost_usd(model, r.text, r.category),
            quality_score=1.0 if good else 0.0,
            latency=call_latency_s(model, r.category),
            features=decision.features,
        )
        chosen.append(model)
    return chosen


@dataclass
class Result:
    name: str
    cost_usd: float
    quality: float
    reward: float
    regret: float
    shares: dict[str, float]
    agreement: float  # share of queries routed to the oracle's choice
    curve: np.ndarray  # moving average of the share routed like the oracle
    cumulative_regret: np.ndarray
    seconds: float


def evaluate(name: str, rounds_by_seed: list[list[Round]]) -> Result:
    costs, qualities, rewards, regrets, choices, agree = [], [], [], [], [], []
    started = time.perf_counter()
    for seed, rounds in enumerate(rounds_by_seed):
        chosen = asyncio.run(play(name, rounds, seed))
        choices.extend(chosen)
        agree.append([m == oracle_choice(r) for m, r in zip(chosen, rounds, strict=True)])
        costs.append(
            [call_cost_usd(m, r.text, r.category) for m, r in zip(chosen, rounds, strict=True)]
        )
        qualities.append([QUALITY[r.category][m] for m, r in zip(chosen, rounds, strict=True)])
        rewards.append([expected_reward(m, r) for m, r in zip(chosen, rounds, strict=True)])
        regrets.append(
            [
                expected_reward(oracle_choice(r), r) - expected_reward(m, r)
                for m, r in zip(chosen, rounds, strict=True)
            ]
        )
    seconds = time.perf_counter() - started
    agree_arr = np.mean(np.array(agree, dtype=np.float64), axis=0)
    kernel = np.ones(WINDOW) / WINDOW
    return Result(
        name=name,
        cost_usd=float(np.mean(costs)),
        quality=float(np.mean(qualities)),
        reward=float(np.mean(rewards)),
        regret=float(np.sum(regrets) / len(rounds_by_seed)),
        shares={m: choices.count(m) / len(choices) for m in MODELS},
        agreement=float(np.mean(agree_arr)),
        curve=np.convolve(agree_arr, kernel, mode="valid"),
        cumulative_regret=np.cumsum(np.mean(np.array(regrets), axis=0)),
        seconds=seconds,
    )


def plot(results: list[Result], path: Path, rounds: int, seeds: int) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    palette = plt.get_cmap("tab10")
    baseline_colours = {
        "always-strong": "black",
        "always-cheap": "darkcyan",
        "random": "grey",
        "oracle": "goldenrod",
    }
    for index, res in enumerate(results):
        style = "--" if res.name in BASELINES else "-"
        colour = baseline_colours.get(res.name, palette(index % 10))
        x = np.arange(WINDOW, WINDOW + len(res.curve))
        left.plot(x, res.curve, style, color=colour, label=res.name, linewidth=1.3)
        if res.name != "oracle":
            right.plot(res.cumulative_regret, style, color=colour, label=res.name, linewidth=1.3)
    left.set_title(f"Share routed to the oracle's model (moving average, {WINDOW} queries)")
    left.set_xlabel("query")
    left.set_ylabel("share")
    left.set_ylim(0.0, 1.02)
    right.set_title("Cumulative regret against the oracle")
    right.set_xlabel("query")
    right.set_ylabel("regret")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.suptitle(
        f"Conduit learning simulation: {', '.join(MODELS)}; {rounds} queries x {seeds} seeds",
        fontsize=10,
    )
    fig.tight_layout(rect=(0.0, 0.08, 1.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--plot", type=Path, default=Path(__file__).parent / "results" / "learning_curves.png"
    )
    args = parser.parse_args()
    rounds_by_seed = [workload(args.rounds, 1000 + s) for s in range(args.seeds)]
    results = [evaluate(name, rounds_by_seed) for name in (*POLICIES, *BASELINES)]
    print(
        f"workload: {args.rounds} queries x {args.seeds} seeds; mix {MIX}; models "
        f"cheap={CHEAP} mid={MID} strong={STRONG}; reward weights balanced {WEIGHTS.as_tuple()}"
    )
    header = (
        f"{'policy':<15} {'cost $/query':>12} {'quality':>8} {'reward':>7} {'regret':>8} "
        f"{'=oracle':>7} {'cheap':>6} {'mid':>6} {'strong':>6} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    for res in results:
        s = res.shares
        print(
            f"{res.name:<15} {res.cost_usd:>12.6f} {res.quality:>8.3f} {res.reward:>7.3f} "
            f"{res.regret:>8.1f} {res.agreement:>7.1%} "
            f"{s[CHEAP]:>6.1%} {s[MID]:>6.1%} {s[STRONG]:>6.1%} {res.seconds:>7.2f}"
        )
    oracle = {c: oracle_choice(Round(c, " ".join(WORDS[c][:8]), 0.0)) for c in MIX}
    print(f"oracle choice per category: {oracle}")
    plot(results, args.plot, args.rounds, args.seeds)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
