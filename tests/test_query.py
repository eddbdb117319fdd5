"""Query, Constraints (the eligible set) and RoutingDecision serialisation."""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import time
import uuid

import pytest

from conduit_sidecar.errors import InvalidArgument, NoEligibleModel
from conduit_sidecar.feedback import FeedbackEvent
from conduit_sidecar.models import EXPECTED_OUTPUT_TOKENS, ModelSpec
from conduit_sidecar.query import (
    MAX_JSON_DEPTH,
    Constraints,
    Query,
    RoutingDecision,
    check_id,
    check_json_object,
    new_query_id,
)
from conduit_sidecar.reward import RewardWeights

SPECS = {
    spec.id: spec
    for spec in (
        ModelSpec("cheap", "p", 0.1, 0.4, 0.8, 0.5),
        ModelSpec("mid", "p", 1.0, 4.0, 2.0, 0.7),
        ModelSpec("strong", "p", 10.0, 40.0, 6.0, 0.9),
    )
}


def test_query_defaults_and_generated_ids() -> None:
    a, b = Query(text="hello"), Query(text="hello")
    assert a.query_id is not None and len(a.query_id) == 32
    assert a.query_id != b.query_id
    assert a.metadata == {} and a.metadata is not b.metadata
    assert Query(text="x", query_id="mine").query_id == "mine"


def test_generated_ids_are_time_ordered_uuid7_hex() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_query_id() for _ in range(1000)]
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == 1000
    for value in ids[:50]:
        parsed = uuid.UUID(hex=value)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == value
        assert before_ms <= int(value[:12], 16) <= after_ms
    # Ordered to the millisecond: the stores' id indexes grow at one end.
    stamps = [int(value[:12], 16) for value in ids]
    assert stamps == sorted(stamps)


def test_ids_stay_unique_across_random_draws_and_threads() -> None:
    # Tails are drawn 256 at a time: several draws, raced by threads, never repeat one.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        batches = list(pool.map(lambda _: [new_query_id() for _ in range(700)], range(4)))
    ids = [value for batch in batches for value in batch]
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(hex=value).version for value in ids} == {7}


def test_a_forked_child_does_not_reuse_the_parents_random_tails() -> None:
    new_query_id()  # the parent now holds drawn, unused tails
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(write_end, new_query_id()[12:].encode())
        os._exit(0)
    os.close(write_end)
    child_tail = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child_tail) == 20
    assert child_tail != new_query_id()[12:]


def test_no_constraints_keep_everything() -> None:
    assert Constraints().eligible(SPECS, "text") == (["cheap", "mid", "strong"], "")


def test_allowed_and_excluded() -> None:
    kept, note = Constraints(allowed_models=["strong", "cheap"]).eligible(SPECS, "t")
    assert kept == ["cheap", "strong"]  # catalogue order
    assert "allowed_models" in note
    kept, note = Constraints(excluded_models=["mid"]).eligible(SPECS, "t")
    assert kept == ["cheap", "strong"]
    assert "excluded_models" in note


def test_max_cost_uses_the_estimated_call_cost() -> None:
    text = "x" * 4000  # 1000 input tokens by the chars/4 estimate
    cost_mid = (1000 * 1.0 + EXPECTED_OUTPUT_TOKENS * 4.0) / 1e6
    kept, note = Constraints(max_cost_usd=cost_mid).eligible(SPECS, text)
    assert kept == ["cheap", "mid"]
    assert "max_cost_usd" in note
    kept, _ = Constraints(max_cost_usd=cost_mid * 0.99).eligible(SPECS, text)
    assert kept == ["cheap"]


def test_max_latency_uses_expected_latency() -> None:
    kept, _ = Constraints(max_latency_s=2.0).eligible(SPECS, "t")
    assert kept == ["cheap", "mid"]


def test_nothing_eligible_says_which_constraint_removed_what() -> None:
    with pytest.raises(NoEligibleModel) as info:
        Constraints(excluded_models=["cheap"], max_latency_s=1.0).eligible(SPECS, "t")
    message = str(info.value)
    assert "excluded_models removed ['cheap']" in message
    assert "max_latency_s=1 removed ['mid', 'strong']" in message
    with pytest.raises(NoEligibleModel, match="max_cost_usd"):
        Constraints(max_cost_usd=0.0).eligible(SPECS, "t")
    with pytest.raises(NoEligibleModel, match="allowed_models"):
        Constraints(allowed_models=[]).eligible(SPECS, "t")


@pytest.mark.parametrize(
    ("constraints", "field"),
    [
        (Constraints(allowed_models=["cheap", "nope"]), "constraints.allowed_models"),
        (Constraints(excluded_models=["nope"]), "constraints.excluded_models"),
        (Constraints(allowed_models="cheap"), "constraints.allowed_models"),  # type: ignore[arg-type]
        (Constraints(allowed_models=[["cheap"]]), "constraints.allowed_models"),  # type: ignore[list-item]
        (Constraints(excluded_models=[{"cheap"}]), "constraints.excluded_models"),  # type: ignore[list-item]
        (Constraints(max_cost_usd=-1.0), "constraints.max_cost_usd"),
        (Constraints(max_cost_usd=math.nan), "constraints.max_cost_usd"),
        (Constraints(max_latency_s=math.inf), "constraints.max_latency_s"),
        (Constraints(max_latency_s="fast"), "constraints.max_latency_s"),  # type: ignore[arg-type]
    ],
)
def test_bad_constraints_name_the_field(constraints: Constraints, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        constraints.eligible(SPECS, "t")
    assert info.value.field == field


def _decision() -> RoutingDecision:
    return RoutingDecision(
        query_id="q1",
        selected_model="mid",
        confidence=0.75,
        features=[0.5, -1.0, 0.0],
        scores={"cheap": 0.1, "mid": 0.4},
        propensity=0.9,
        reasoning="linucb: mid",
        policy_version=7,
        reward_weights=RewardWeights(0.6, 0.2, 0.2),
        session_id="s",
        user_id=None,
        metadata={"tenant": "a"},
    )


def test_decision_round_trips_through_json() -> None:
    decision = _decision()
    data = json.loads(json.dumps(decision.to_dict()))
    assert RoutingDecision.from_dict(data) == decision


def test_decision_from_bad_dict_names_the_problem() -> None:
    data = _decision().to_dict()
    del data["selected_model"]
    with pytest.raises(InvalidArgument, match="selected_model"):
        RoutingDecision.from_dict(data)
    data = _decision().to_dict()
    data["confidence"] = "high"
    with pytest.raises(InvalidArgument) as info:
        RoutingDecision.from_dict(data)
    assert info.value.field == "confidence"
    data = _decision().to_dict()
    data["scores"] = [1, 2]
    with pytest.raises(InvalidArgument) as info:
        RoutingDecision.from_dict(data)
    assert info.value.field == "decision"


def test_ids_every_store_can_key_by() -> None:
    # Checked in the domain, so the Python API on PostgreSQL (no NUL in text, B-tree row
    # limit) refuses these as the gRPC edge does, instead of answering Unavailable.
    assert check_id("query_id", "é" * 256) == "é" * 256  # 512 bytes in UTF-8: the limit
    for bad, message in (
        ("a\x00b", "NUL"),
        ("é" * 257, "too long: 514 bytes"),
        ("x" * 513, "too long: 513 bytes"),
        (" ", "non-empty"),
    ):
        with pytest.raises(InvalidArgument, match=message) as info:
            check_id("session_id", bad)
        assert info.value.field == "session_id"


def nested(levels: int, container: str = "dict") -> dict[str, object]:
    """A JSON object nested `levels` deep (the top level counts as 1)."""
    inner: object = 1
    for _ in range(levels - 1):
        inner = {"a": inner} if container == "dict" else [inner]
    return {"a": inner}


@pytest.mark.parametrize("container", ["dict", "list"])
def test_json_objects_nested_too_deeply_name_the_field(container: str) -> None:
    assert check_json_object("payload", nested(MAX_JSON_DEPTH, container))
    # 5000 levels: json's encoder raised RecursionError (no field named, not a ValueError),
    # from the Python API's metadata and feedback payloads alike.
    for levels in (MAX_JSON_DEPTH + 1, 5000):
        with pytest.raises(InvalidArgument, match="nested deeper than") as info:
            check_json_object("payload", nested(levels, container))
        assert info.value.field == "payload"
    event = FeedbackEvent("q1", "thumbs", {"value": "up", "thread": nested(5000, container)})
    with pytest.raises(InvalidArgument) as info:
        event.validate()
    assert info.value.field == "payload"
    wide = {f"k{i}": [nested(3)] * 3 for i in range(200)}  # long, but shallow
    assert check_json_object("metadata", wide) == wide
