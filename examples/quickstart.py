"""The spec's Quick Start, runnable: route a query, track it, record a thumbs-up.

Only the import differs from the spec (`conduit_sidecar` instead of `conduit`). Runs offline:
Conduit never calls an LLM itself, and this example has no LLM call to make.

    python examples/quickstart.py
"""

from __future__ import annotations

import asyncio

from conduit_sidecar import Query, Router
from conduit_sidecar.feedback import FeedbackCollector, FeedbackEvent


async def main() -> None:
    # Setup
    router = Router()
    collector = FeedbackCollector(router)

    # Route a query
    decision = await router.route(Query(text="What is Python?"))

    # Track for delayed feedback
    await collector.track(decision, cost=0.001, latency=0.5)

    # Later: Record user feedback
    result = await collector.record(
        FeedbackEvent(query_id=decision.query_id, signal_type="thumbs", payload={"value": "up"})
    )

    print(f"routed to {decision.selected_model} ({decision.reasoning})")
    print(f"recorded thumbs-up: reward={result.reward} applied_reward={result.applied_reward:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
