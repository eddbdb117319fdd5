"""The decision record codec the text-storing backends share (SQLite, Redis, PostgreSQL):
exact round trips, records of the previous format, and malformed records refused by name."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback import SqliteFeedbackStore
from conduit_sidecar.feedback.stores.base import decision_from_json, decision_to_json
from conduit_sidecar.query import RoutingDecision
from conduit_sidecar.reward import RewardWeights


def sample_decision() -> RoutingDecision:
    return RoutingDecision(
        query_id="q-1",
        selected_model="small",
        confidence=0.8125,
        # Values whose decimal form is long: the codec must keep every bit.
        features=[0.1, 1 / 3, -2.5e-300, 0.0, math.pi],
        scores={"small": 0.7000000000000001, "large": math.inf, "médium": -0.25},
        propensity=1 / 3,
        reasoning="linucb: small (score 0.7, margin …)",
        policy_version=42,
        reward_weights=RewardWeights(0.5, 0.3, 0.2),
        session_id="s-9",
        user_id=None,
        metadata={"tenant": "acme", "tags": ["a", "b"], "n": 3},
        created_at=1_764_000_000.123456,
    )


def test_a_decision_round_trips_bit_for_bit() -> None:
    decision = sample_decision()
    restored = decision_from_json(decision_to_json(decision))
    assert restored == decision
    assert [x.hex() for x in restored.features] == [x.hex() for x in decision.features]
    assert list(restored.scores) == list(decision.scores)  # model order kept


def test_the_record_is_json_with_the_numbers_in_one_block() -> None:
    record = json.loads(decision_to_json(sample_decision()))
    assert record["v"] == 2
    assert record["models"] == ["small", "large", "médium"]
    assert "features" not in record and isinstance(record["f64"], str)


def test_records_of_the_first_format_are_still_read() -> None:
    decision = sample_decision()
    decision.scores["large"] = 9.5  # format 1 could not hold inf
    old = json.dumps(decision.to_dict(), separators=(",", ":"), allow_nan=False)
    assert decision_from_json(old) == decision


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("f64"), "missing key 'f64'"),
        (lambda r: r.update(f64=r["f64"][:-8]), "malformed decision record"),
        (lambda r: r.update(models=r["models"] + ["x", "y", "z", "w"]), "malformed"),
        (lambda r: r.update(f64=12), "malformed decision record"),
        (lambda r: r.update(policy_version="many"), "malformed decision record"),
    ],
)
def test_a_malformed_record_is_refused_naming_the_decision(change: object, message: str) -> None:
    record = json.loads(decision_to_json(sample_decision()))
    change(record)  # type: ignore[operator]
    with pytest.raises(InvalidArgument, match=message) as info:
        decision_from_json(json.dumps(record))
    assert info.value.field == "decision"


async def test_sqlite_keeps_a_decision_exactly(tmp_path: Path) -> None:
    store = SqliteFeedbackStore(tmp_path / "codec.db")
    await store.initialize()
    try:
        decision = sample_decision()
        assert await store.log_decision(decision, 60.0)
        pending = await store.get(decision.query_id)
        assert pending is not None and pending.decision == decision
    finally:
        await store.close()
