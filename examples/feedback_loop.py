"""Implicit feedback with caching: a service that learns from errors, retries, latency and
regenerations, without ever asking the user for a rating.

Each request first checks a response cache (a repeated question is served from the cache and
never routed, so it teaches the router nothing). On a miss the router picks a model, the
(simulated) LLM call may fail and be retried, and `collector.track` reports cost, latency,
`error` and `retries`, which become implicit signals. A user who asks for another answer
sends a `regeneration` signal; one who does not, a mild positive one.

The LLM is simulated (Conduit never calls one): three models where "flaky-model" errors on a
third of calls and gets regenerated often, "slow-model" is good but slow and pricey, and
"steady-model" is good enough, cheap and fast. Over a few hundred requests the router moves
its traffic to "steady-model".

    python examples/feedback_loop.py
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from conduit_sidecar import Query, Router
from conduit_sidecar.feedback import (
    FeedbackCollector,
    FeedbackEvent,
    FeedbackStore,
    RegenerationAdapter,
)
from conduit_sidecar.models import ModelSpec

MODELS = [
    # id, provider, $ in / out per Mtok, expected latency s, quality prior (metadata only)
    ModelSpec("flaky-model", "sim", 0.10, 0.40, 0.8, 0.5),
    ModelSpec("steady-model", "sim", 0.15, 0.60, 1.0, 0.7),
    ModelSpec("slow-model", "sim", 5.00, 25.00, 9.0, 0.9),
]
ERROR_RATE = {"flaky-model": 0.35, "steady-model": 0.02, "slow-model": 0.02}
REGENERATE_RATE = {"flaky-model": 0.5, "steady-model": 0.1, "slow-model": 0.05}
TOPICS = ["python", "sql", "regex", "git", "docker", "http", "css", "bash", "rust", "math"]


@dataclass
class Outcome:
    text: str
    cost_usd: float
    latency_s: float
    error: bool
    retries: int


def call_llm(spec: ModelSpec, prompt: str, rng: random.Random) -> Outcome:
    """Simulated LLM call with up to two retries on failure."""
    retries = 0
    latency_s = 0.0
    while True:
        latency_s += spec.expected_latency_s * rng.uniform(0.7, 1.3)
        if rng.random() >= ERROR_RATE[spec.id]:
            return Outcome(
                f"answer from {spec.id}", spec.cost_usd(50, 200), latency_s, False, retries
            )
        if retries == 2:
            return Outcome("", spec.cost_usd(50, 0), latency_s, True, retries)
        retries += 1


class ResponseCache:
    """Exact-match cache on the normalised question."""

    def __init__(self) -> None:
        self._answers: dict[str, str] = {}
        self.hits = 0

    def get(self, question: str) -> str | None:
        answer = self._answers.get(" ".join(question.lower().split()))
        if not answer:
            return None  # unknown, or a rejected answer that must not be served again
        self.hits += 1
        return answer

    def put(self, question: str, answer: str) -> None:
        self._answers[" ".join(question.lower().split())] = answer


async def main(
    rounds: int = 400, seed: int = 1, store: FeedbackStore | None = None
) -> dict[str, Any]:
    rng = random.Random(seed)
    router = Router(models=MODELS, feature_dim=32, seed=seed)
    collector = FeedbackCollector(router, store=store)
    collector.register_adapter(RegenerationAdapter())
    cache = ResponseCache()
    chosen: list[str] = []

    for i in range(rounds):
        if i and i % 100 == 0:
            print(f"after {i:4d} requests, last 100 routed: {dict(Counter(chosen[-100:]))}")
        question = f"How do I do task {rng.randint(0, 150)} in {rng.choice(TOPICS)}?"
        if cache.get(question) is not None:
            continue  # served from the cache: no route, no LLM call, nothing to learn
        decision = await router.route(Query(text=question))
        spec = router.model(decision.selected_model)
        outcome = call_llm(spec, question, rng)
        await collector.track(
            decision,
            cost=outcome.cost_usd,
            latency=outcome.latency_s,
            error=outcome.error,
            retries=outcome.retries,
        )
        chosen.append(decision.selected_model)
        if outcome.error:
            continue  # the error itself is the signal
        cache.put(question, outcome.text)
        regenerated = rng.random() < REGENERATE_RATE[spec.id]
        await collector.record(
            FeedbackEvent(decision.query_id, "regeneration", {"regenerated": regenerated})
        )
        if regenerated:
            cache.put(question, "")  # the user rejected it: do not serve it again

    tail = Counter(chosen[len(chosen) // 2 :])
    counts = await collector.feedback_counts()
    print(f"cache hits: {cache.hits}; signals: {counts}")
    for model_id, stats in router.stats().items():
        print(
            f"{model_id:13s} selections={stats.selections:4d} "
            f"mean_reward={stats.mean_reward:.3f} weight={stats.weight_sum:.1f}"
        )
    return {
        "routed": len(chosen),
        "cache_hits": cache.hits,
        "second_half": dict(tail),
        "signal_counts": counts,
    }


if __name__ == "__main__":
    asyncio.run(main())
