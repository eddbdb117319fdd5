"""The clients' methods against the library's: the same parameter names, defaults and
accepted values, and the library's refusal (InvalidArgument naming the argument) for
arguments of the wrong type, over a real sidecar."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from grpc_fixtures import Sidecar, sidecar

from conduit_sidecar.client import AsyncConduitClient, ConduitClient
from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback import FeedbackCollector, SessionFeedback
from conduit_sidecar.query import Query
from conduit_sidecar.reward import PRESETS
from conduit_sidecar.router import Router

__all__ = ["sidecar"]  # fixture imported for pytest

LIBRARY = {
    "route": Router.route,
    "track": FeedbackCollector.track,
    "record": FeedbackCollector.record,
    "record_session_feedback": FeedbackCollector.record_session_feedback,
    "update": Router.update,
}


def _params(fn: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("client_class", [ConduitClient, AsyncConduitClient])
@pytest.mark.parametrize("method", sorted(LIBRARY))
def test_each_method_takes_the_library_parameters(client_class: type, method: str) -> None:
    # record_session_feedback's parameter was `sf` (the library's is `feedback`), so a
    # keyword call written against the library failed with TypeError.
    library = _params(LIBRARY[method])
    client = _params(getattr(client_class, method))
    assert client[: len(library)] == library
    extra = client[len(library) :]  # client-only options, never positional
    assert all(kind is inspect.Parameter.KEYWORD_ONLY for _, kind, _ in extra)


def test_update_takes_a_preset_name_as_the_library_does(sidecar: Sidecar) -> None:
    with ConduitClient(sidecar.target) as client:
        features = client.route(Query(text="a preset"), include_features=True).features
        model = client.list_models()[0].id
        args: dict[str, Any] = dict(
            model_id=model, cost=0.01, quality_score=0.9, latency=2.0, features=features
        )
        # A preset name raised AttributeError ('str' object has no attribute 'quality').
        by_name = client.update(**args, reward_weights="cost")
        assert by_name == client.update(**args, reward_weights=PRESETS["cost"])
        assert by_name != client.update(**args, reward_weights="quality")
        with pytest.raises(InvalidArgument, match="unknown preset") as info:
            client.update(**args, reward_weights="cheapest")
        assert info.value.field == "reward_weights"


async def test_arguments_of_the_wrong_type_are_refused_naming_them(sidecar: Sidecar) -> None:
    # Each raised AttributeError from inside the client; the library names the argument.
    async with AsyncConduitClient(sidecar.target) as client:
        calls: list[tuple[str, Any]] = [
            ("query", lambda: client.route("What is Python?")),
            ("decision", lambda: client.track(5)),
            ("event", lambda: client.record({"query_id": "q"})),
            ("feedback", lambda: client.record_session_feedback(None)),
        ]
        for field, call in calls:
            with pytest.raises(InvalidArgument) as info:
                await call()
            assert info.value.field == field
        session = SessionFeedback(session_id="none-pending", signal_type="thumbs")
        with pytest.raises(Exception, match="session"):  # reached the server: NotFound
            await client.record_session_feedback(feedback=session)
