"""`conduit-sidecar demo`: a throwaway sidecar on a free loopback port, simulated traffic with
feedback through real gRPC, and a plain-text progress bar showing routing shift as it learns.

The simulated world has easy and hard queries and three models: a cheap one that is good at
easy queries only, a middle one, and a strong, expensive one. Users give thumbs up with the
probability of the model's quality for the query's category. With balanced reward weights the
best choice is the cheap model for easy queries and the strong model for hard ones.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from typing import TextIO

from .app import SidecarApp
from .client import AsyncConduitClient
from .config import SidecarConfig
from .feedback.events import FeedbackEvent
from .models import ModelSpec, estimate_cost_usd
from .query import Constraints, Query
from .server import SidecarServer

# Quality (thumbs-up probability) per role and category.
QUALITY = {
    "cheap": {"easy": 0.90, "hard": 0.20},
    "middle": {"easy": 0.85, "hard": 0.55},
    "strong": {"easy": 0.93, "hard": 0.92},
}
_COUNTRIES = ("France", "Peru", "Japan", "Kenya", "Canada", "Norway", "Chile", "Egypt")
_TOPICS = ("compactness", "eigenvalues", "group actions", "martingales", "tensor products")
BAR_WIDTH = 24


def easy_text(rng: random.Random) -> str:
    return f"What is the capital of {rng.choice(_COUNTRIES)}?"


def hard_text(rng: random.Random) -> str:
    topic = rng.choice(_TOPICS)
    return (
        f"Prove rigorously, step by step, a non-trivial theorem about {topic}; derive every "
        f"lemma formally, analyse the edge cases and explain the proof strategy for {topic}."
    )


def pick_roles(models: list[ModelSpec]) -> dict[str, ModelSpec]:
    """Cheapest, strongest (by quality prior) and one in between from the catalogue."""
    by_price = sorted(models, key=lambda m: (m.input_usd_per_mtok + m.output_usd_per_mtok, m.id))
    cheap = by_price[0]
    strong = max(models, key=lambda m: (m.quality_prior, m.id))
    rest = [m for m in by_price if m.id not in (cheap.id, strong.id)]
    middle = rest[len(rest) // 2] if rest else by_price[-1]
    return {"cheap": cheap, "middle": middle, "strong": strong}


def bar(done: int, total: int) -> str:
    filled = round(BAR_WIDTH * done / total)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def shares(counter: Counter[str], names: dict[str, str]) -> str:
    total = sum(counter.values()) or 1
    return " ".join(f"{role} {100 * counter[role] / total:3.0f}%" for role in names)


async def run_demo(
    rounds: int = 600, seed: int = 7, policy: str = "linucb", out: TextIO = sys.stdout
) -> int:
    """Runs the simulation; returns 0. Prints one progress line per tenth of the rounds."""
    if rounds < 10:
        raise ValueError(f"rounds: must be >= 10, got {rounds}")
    rng = random.Random(seed)
    config = SidecarConfig(
        listen="127.0.0.1:0", store_url="memory://", policy=policy, seed=seed
    ).validate()
    app = await SidecarApp.create(config)
    server = SidecarServer(config, app, shutdown_delay_s=0.0)
    port = await server.start()
    try:
        async with AsyncConduitClient(f"127.0.0.1:{port}") as client:
            roles = pick_roles(await client.list_models())
            role_of = {spec.id: role for role, spec in roles.items()}
            names = {role: spec.id for role, spec in roles.items()}
            print(f"demo sidecar on 127.0.0.1:{port}, policy {policy}", file=out)
            for role, spec in roles.items():
                q = QUALITY[role]
                print(
                    f"  {role:6} = {spec.id:18} quality easy {q['easy']:.2f} hard {q['hard']:.2f}",
                    file=out,
                )
            allowed = Constraints(allowed_models=list(role_of))
            block = max(rounds // 10, 1)
            window: dict[str, Counter[str]] = {"easy": Counter(), "hard": Counter()}
            for i in range(1, rounds + 1):
                category = "easy" if rng.random() < 0.5 else "hard"
                text = easy_text(rng) if category == "easy" else hard_text(rng)
                decision = await client.route(Query(text=text, constraints=allowed))
                role = role_of[decision.selected_model]
                spec = roles[role]
                window[category][role] += 1
                latency_s = spec.expected_latency_s * rng.uniform(0.8, 1.2)
                await client.track(decision, cost=estimate_cost_usd(spec, text), latency=latency_s)
                up = rng.random() < QUALITY[role][category]
                await client.record(
                    FeedbackEvent(decision.query_id, "thumbs", {"value": "up" if up else "down"})
                )
                if i % block == 0 or i == rounds:
                    print(
                        f"{bar(i, rounds)} {i:5}/{rounds}  easy: {shares(window['easy'], names)}"
                        f"  | hard: {shares(window['hard'], names)}",
                        file=out,
                    )
                    window = {"easy": Counter(), "hard": Counter()}
            stats = await client.get_stats()
    finally:
        await server.shutdown()
    from .cli import format_stats

    print("", file=out)
    print(format_stats(stats), file=out)
    return 0
