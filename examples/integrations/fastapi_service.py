"""FastAPI integration: a webhook that receives feedback (the spec's example), plus route and
track endpoints so the service is complete.

The request handling lives in plain async functions (`route_query`, `track_query`,
`submit_feedback`) that take and return plain data, so they run and are tested without
FastAPI; `create_app` wraps them in a FastAPI app only when `fastapi` is importable (it is not
a Conduit dependency: `pip install fastapi uvicorn` to serve this). As in the spec, a
`ValueError` from `collector.record` (unknown query, bad payload) becomes HTTP 404.

    uvicorn examples.integrations.fastapi_service:app
"""

from __future__ import annotations

import asyncio
from typing import Any

from conduit_sidecar import Query, Router
from conduit_sidecar.feedback import FeedbackCollector, FeedbackEvent


class HTTPError(Exception):
    """An error response: the FastAPI layer turns it into `HTTPException`."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


router = Router()
collector = FeedbackCollector(router)


async def route_query(
    collector: FeedbackCollector, router: Router, text: str, session_id: str | None = None
) -> dict[str, Any]:
    """POST /route: pick a model; the decision is kept for later track/feedback calls."""
    try:
        decision = await router.route(Query(text=text, session_id=session_id))
    except ValueError as e:
        raise HTTPError(422, str(e)) from None
    await collector.log_decision(decision)
    return {
        "query_id": decision.query_id,
        "selected_model": decision.selected_model,
        "confidence": decision.confidence,
        "reasoning": decision.reasoning,
    }


async def track_query(
    collector: FeedbackCollector,
    query_id: str,
    cost: float | None = None,
    latency: float | None = None,
    error: bool = False,
    retries: int = 0,
) -> dict[str, Any]:
    """POST /track: report the LLM call's outcome (cost in USD, latency in seconds)."""
    try:
        await collector.track(query_id, cost=cost, latency=latency, error=error, retries=retries)
    except ValueError as e:
        raise HTTPError(404, str(e)) from None
    return {"status": "tracked", "query_id": query_id}


async def submit_feedback(
    collector: FeedbackCollector,
    query_id: str,
    signal_type: str = "thumbs",
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST /feedback: the spec's webhook body."""
    event = FeedbackEvent(
        query_id=query_id,
        signal_type=signal_type,
        payload=payload if payload is not None else {},
    )

    try:
        result = await collector.record(event)
        return {"status": "recorded", "reward": result.reward}
    except ValueError as e:
        raise HTTPError(status_code=404, detail=str(e)) from None


def create_app(collector: FeedbackCollector, router: Router) -> Any:
    """The FastAPI app (requires fastapi and pydantic)."""
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, Field

    app = FastAPI()

    class RouteRequest(BaseModel):
        text: str
        session_id: str | None = None

    class TrackRequest(BaseModel):
        query_id: str
        cost: float | None = None
        latency: float | None = None
        error: bool = False
        retries: int = 0

    class FeedbackRequest(BaseModel):
        query_id: str = Field(..., description="Query ID from routing response")
        signal_type: str = Field(default="thumbs", description="Feedback type")
        payload: dict[str, Any] = Field(default_factory=dict, description="Signal data")

    async def answer(coro: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await coro
        except HTTPError as e:
            raise HTTPException(status_code=e.status_code, detail=e.detail) from None
        return result

    @app.post("/route")
    async def route(request: RouteRequest) -> dict[str, Any]:
        return await answer(route_query(collector, router, request.text, request.session_id))

    @app.post("/track")
    async def track(request: TrackRequest) -> dict[str, Any]:
        return await answer(
            track_query(
                collector,
                request.query_id,
                request.cost,
                request.latency,
                request.error,
                request.retries,
            )
        )

    @app.post("/feedback")
    async def feedback(request: FeedbackRequest) -> dict[str, Any]:
        return await answer(
            submit_feedback(collector, request.query_id, request.signal_type, request.payload)
        )

    return app


try:
    import fastapi  # noqa: F401
except ImportError:
    app = None  # fastapi is not installed: the handlers above still work as plain functions
else:
    app = create_app(collector, router)


async def demo() -> None:
    """Without a web server: one route -> track -> feedback round trip through the handlers."""
    routed = await route_query(collector, router, "What is Python?")
    await track_query(collector, routed["query_id"], cost=0.001, latency=0.5)
    print(await submit_feedback(collector, routed["query_id"], "thumbs", {"value": "up"}))
    try:
        await submit_feedback(collector, "unknown-id", "thumbs", {"value": "up"})
    except HTTPError as e:
        print(e.status_code, e.detail)


if __name__ == "__main__":
    asyncio.run(demo())
