"""The check a RoutingDecision passes before the collector stores it.

A decision reaches `log_decision` and `track` from the Router, valid by construction, or
from a caller who built or edited one. A field of the wrong type used to fail somewhere
below: `reward_weights=None` as AttributeError and non-numeric features as TypeError after
the store had kept the Track (its retry is a duplicate, so the outcome never reached the
policy), `scores=None` as a bare TypeError from SQLite's encoder. Everything is refused here,
naming `decision.<field>`, before any write.

`log_decision` runs on every Route, so the decisions the Router builds take one fast test
(exact types, one sum per vector) and only anything else is looked at field by field.

`refuse_another_pending` is Track's other check: a decision whose (caller-chosen) query_id
is already pending for another decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback.stores.base import FeedbackStore
from conduit_sidecar.query import RoutingDecision, check_id, check_json_object, check_unicode
from conduit_sidecar.reward import RewardWeights, as_number


def check_decision(decision: object, dim: int | None = None) -> RoutingDecision:
    """`decision` if every field is usable by the stores and the policy, else InvalidArgument
    naming `decision.<field>` (or `decision` when it is no RoutingDecision). `dim`: the
    router's feature dimension, when known; a decision with another number of features
    could be stored but never learned from."""
    if type(decision) is not RoutingDecision or not _usual(decision, dim):
        if not isinstance(decision, RoutingDecision):
            raise InvalidArgument("decision", f"must be a RoutingDecision, got {decision!r}")
        _check_fields(decision, dim)
    metadata = decision.metadata
    if metadata or type(metadata) is not dict:  # the usual {} needs no encoding
        # The durable stores encode it as JSON: refused here, not by their encoder.
        check_json_object("decision.metadata", metadata)
    return decision


def _usual(d: RoutingDecision, dim: int | None) -> bool:
    """True for a decision shaped as Router.decide builds them, with finite numbers (scores
    NaN-free: an unplayed arm may score +inf); False means: look field by field. Few and
    cheap tests: this runs on every Route."""
    scores = d.scores
    try:
        if not (
            type(d.reward_weights) is RewardWeights
            and type(d.features) is list
            and (dim is None or len(d.features) == dim)
            and type(scores) is dict
            and type(d.policy_version) is int
            and type(d.reasoning) is str
            and type(d.selected_model) is str
            and d.selected_model in scores  # "".join below proves every key a string
            and (d.user_id is None or type(d.user_id) is str)
            # A finite sum proves every term a finite number (a string or None raises
            # TypeError); huge values whose sum overflows take the slow path.
            and math.isfinite(d.confidence + d.propensity + d.created_at + sum(d.features))
            and not math.isnan(sum(scores.values()))
        ):
            return False
        "".join(scores)  # in C: a generator over the keys cost 5x more
    except TypeError:
        return False
    # The ids become store keys: the full check (a few string tests).
    check_id("decision.query_id", d.query_id)
    if d.session_id is not None:
        check_id("decision.session_id", d.session_id)
    if d.user_id is not None:
        check_unicode("decision.user_id", d.user_id)  # free for ASCII
    return True


def _check_fields(d: RoutingDecision, dim: int | None) -> None:
    check_id("decision.query_id", d.query_id)
    model = d.selected_model
    if not isinstance(model, str) or not model.strip():
        raise InvalidArgument("decision.selected_model", f"must be a model id, got {model!r}")
    check_unicode("decision.selected_model", model)
    _finite("decision.confidence", d.confidence)
    _finite("decision.propensity", d.propensity)
    _finite("decision.created_at", d.created_at)
    features: Any = d.features
    # A sequence (list, tuple, array): an iterator would be used up by this very check.
    if isinstance(features, str | bytes | Mapping) or not (
        hasattr(features, "__len__") and hasattr(features, "__getitem__")
    ):
        raise InvalidArgument("decision.features", f"must be a list of numbers, got {features!r}")
    count = 0
    for value in features:
        _finite("decision.features", value)
        count += 1
    if dim is not None and count != dim:
        raise InvalidArgument(
            "decision.features", f"{count} values; the router's feature dimension is {dim}"
        )
    scores: Any = d.scores
    if not isinstance(scores, Mapping):
        raise InvalidArgument("decision.scores", f"must be a mapping, got {scores!r}")
    for key, score in scores.items():
        if not isinstance(key, str):
            raise InvalidArgument("decision.scores", f"keys must be model ids, got {key!r}")
        if math.isnan(as_number("decision.scores", score)):
            raise InvalidArgument("decision.scores", f"{key!r} scores NaN")
    if not isinstance(d.reasoning, str):
        raise InvalidArgument("decision.reasoning", f"must be a string, got {d.reasoning!r}")
    check_unicode("decision.reasoning", d.reasoning)
    version: Any = d.policy_version
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InvalidArgument(
            "decision.policy_version", f"must be an integer >= 0, got {version!r}"
        )
    if not isinstance(d.reward_weights, RewardWeights):
        raise InvalidArgument(
            "decision.reward_weights", f"must be RewardWeights, got {d.reward_weights!r}"
        )
    if d.session_id is not None:
        check_id("decision.session_id", d.session_id)
    user_id: Any = d.user_id
    if user_id is not None:
        if not isinstance(user_id, str):
            raise InvalidArgument("decision.user_id", f"must be a string, got {user_id!r}")
        check_unicode("decision.user_id", user_id)


def _finite(field: str, value: object) -> None:
    if not math.isfinite(as_number(field, value)):
        raise InvalidArgument(field, f"must be finite, got {value!r}")


async def refuse_another_pending(store: FeedbackStore, decision: RoutingDecision) -> None:
    """Refuses a decision whose query_id is pending for another one: a caller-chosen id
    routed twice (Query.decision_id). The store keeps the first logged decision, so this
    one's Track would be credited to the other's model. Checked before the write; two
    such Tracks racing can still both pass, and the later one then updates the first
    decision (it is a plain duplicate when the first was tracked)."""
    pending = await store.get(decision.query_id)
    if pending is None:
        return
    kept = pending.decision
    if (kept.created_at, kept.selected_model) != (decision.created_at, decision.selected_model):
        raise InvalidArgument(
            "decision.query_id",
            f"{decision.query_id!r} is pending for another decision (model "
            f"{kept.selected_model!r}, routed at {kept.created_at!r}), which its Track and "
            "feedback update; track that decision (or its query_id), or give a query "
            "routed again a new query_id",
        )
