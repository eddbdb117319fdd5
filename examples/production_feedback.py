"""Production feedback patterns from the spec, end to end, on any feedback store.

Covers: delayed feedback (track, then record), immediate feedback (router.update), extra and
custom adapters, session feedback, idempotency, the "Unknown query_id" error, and monitoring.
The code blocks are the spec's with only the import changed (`conduit_sidecar` instead of
`conduit`).

Conduit never calls an LLM: `execute_llm` below stands in for your application's own call and
derives cost and latency from the chosen model's catalogue prices, so this runs offline.

    python examples/production_feedback.py                      # in-memory store
    python examples/production_feedback.py --store sqlite --path feedback.db
    python examples/production_feedback.py --store redis --url redis://localhost:6379/0
    python examples/production_feedback.py --store postgres --url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from conduit_sidecar import Query, Router
from conduit_sidecar.feedback import (
    FeedbackAdapter,
    FeedbackCollector,
    FeedbackEvent,
    FeedbackStore,
    InMemoryFeedbackStore,
    PostgresFeedbackStore,
    RatingAdapter,
    RedisFeedbackStore,
    RewardMapping,
    SessionFeedback,
    SqliteFeedbackStore,
    TaskSuccessAdapter,
)


@dataclass
class LLMResponse:
    text: str
    cost: float  # USD
    latency: float  # seconds


async def execute_llm(router: Router, model_id: str, prompt: str) -> LLMResponse:
    """Stand-in for the application's LLM call (not part of Conduit)."""
    spec = router.model(model_id)
    output_tokens = 200
    input_tokens = max(1, len(prompt) // 4)
    # Deterministic per prompt, so the example prints the same thing every run.
    jitter = int(hashlib.sha256(prompt.encode()).hexdigest()[:4], 16) / 0xFFFF
    return LLMResponse(
        text=f"[{model_id}] answer to {prompt!r}",
        cost=spec.cost_usd(input_tokens, output_tokens),
        latency=spec.expected_latency_s * (0.8 + 0.4 * jitter),
    )


def evaluate_response(response: LLMResponse) -> float:
    """Stand-in for an automated evaluator (pattern 2): a score in [0, 1]."""
    return 0.9 if "Python" in response.text else 0.6


class ConversionAdapter(FeedbackAdapter):
    """Reward based on whether user converted (purchased, signed up, etc.)."""

    @property
    def signal_type(self) -> str:
        return "conversion"

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        converted = event.payload.get("converted", False)
        return RewardMapping(
            reward=1.0 if converted else 0.3,  # Partial credit for engagement
            confidence=1.0,
        )


async def main(store: FeedbackStore | None = None) -> dict[str, Any]:
    """Run every pattern once; returns a summary (the tests check it)."""
    router = Router()
    collector = FeedbackCollector(router, store=store or InMemoryFeedbackStore())

    # Register additional adapters (ThumbsAdapter is registered by default)
    collector.register_adapter(RatingAdapter())
    collector.register_adapter(TaskSuccessAdapter())
    collector.register_adapter(ConversionAdapter())

    # Pattern 1: delayed feedback.
    query = Query(text="What is Python?", session_id="session_abc123")
    decision = await router.route(query)
    response = await execute_llm(router, decision.selected_model, query.text)
    await collector.track(decision, cost=response.cost, latency=response.latency)
    thumbs = await collector.record(
        FeedbackEvent(query_id=decision.query_id, signal_type="thumbs", payload={"value": "up"})
    )
    print(f"pattern 1: {decision.selected_model} thumbs-up -> reward {thumbs.reward}")

    # Pattern 2: immediate feedback.
    query2 = Query(text="Summarise the Python GIL in one line")
    decision2 = await router.route(query2)
    response2 = await execute_llm(router, decision2.selected_model, query2.text)
    quality_score = evaluate_response(response2)  # Your evaluation
    applied = await router.update(
        model_id=decision2.selected_model,
        cost=response2.cost,
        quality_score=quality_score,
        latency=response2.latency,
        features=decision2.features,
    )
    print(f"pattern 2: {decision2.selected_model} scored {quality_score} -> reward {applied:.3f}")

    # Different signal types for one query are recorded separately; repeats count once.
    await collector.record(FeedbackEvent(decision.query_id, "rating", {"rating": 5}))
    duplicate = await collector.record(FeedbackEvent(decision.query_id, "rating", {"rating": 5}))
    await collector.record(
        FeedbackEvent(
            query_id=decision.query_id,
            signal_type="conversion",
            payload={"converted": True},
            idempotency_key="client-request-uuid-12345",  # Your deduplication key
        )
    )
    print(f"idempotency: second identical rating duplicate={duplicate.duplicate}")

    # Session feedback: a second turn in the same conversation, then a session rating.
    turn2 = await router.route(Query(text="And how do I install it?", session_id="session_abc123"))
    reply2 = await execute_llm(router, turn2.selected_model, "install python")
    await collector.track(turn2, cost=reply2.cost, latency=reply2.latency)
    session_feedback = SessionFeedback(
        session_id="session_abc123",
        signal_type="rating",
        payload={"rating": 4},
        propagation_weight=0.5,  # 50% weight vs individual query feedback
    )
    session_results = await collector.record_session_feedback(session_feedback)
    print(f"session feedback reached {len(session_results)} queries")

    # Troubleshooting: feedback for a query that was never tracked.
    try:
        await collector.record(FeedbackEvent("not-tracked", "thumbs", {"value": "up"}))
    except ValueError as e:
        print(f"expected error: {e}")

    # Monitoring.
    pending = await collector.get_pending_count()
    history = await collector.get_recent_feedback(limit=100)
    for adapter in collector.adapters.values():
        print(f"{adapter.signal_type}: registered")
    print(f"pending={pending} recent={len(history)} counts={await collector.feedback_counts()}")
    return {
        "pending": pending,
        "recent": [(e.query_id, e.signal_type) for e in history],
        "duplicate": duplicate.duplicate,
        "session_results": len(session_results),
        "adapters": sorted(collector.adapters),
        "total_weight": sum(s.weight_sum for s in router.stats().values()),
    }


def _store_from_args(args: argparse.Namespace) -> FeedbackStore:
    if args.store == "sqlite":
        return SqliteFeedbackStore(args.path)
    if args.store == "redis":
        from redis.asyncio import Redis

        redis = Redis.from_url(args.url or "redis://localhost:6379")
        return RedisFeedbackStore(redis, ttl_seconds=3600)
    if args.store == "postgres":
        return PostgresFeedbackStore(database_url=args.url)
    return InMemoryFeedbackStore()


async def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", choices=["memory", "sqlite", "redis", "postgres"], default="memory"
    )
    parser.add_argument("--path", default="feedback.db", help="SQLite file")
    parser.add_argument("--url", help="Redis or PostgreSQL URL")
    args = parser.parse_args()
    store = _store_from_args(args)
    await store.initialize()  # Creates tables if needed
    try:
        await main(store)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(_cli())
