"""The domain objects that cross the router boundary: Query, Constraints, RoutingDecision.

Plain dataclasses, transport-neutral: the servicer builds them from protobuf messages; the
feedback stores that keep text serialise decisions with `feedback.stores.base.decision_to_json`
(format 2) and still read format-1 records, plain `to_dict` JSON, through `from_dict`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conduit_sidecar.errors import InvalidArgument, NoEligibleModel
from conduit_sidecar.models import EXPECTED_OUTPUT_TOKENS, ModelSpec, estimate_input_tokens
from conduit_sidecar.reward import RewardWeights, as_number, check_non_negative

PREFERENCES = ("balanced", "quality", "cost", "speed")


MAX_TEXT_CHARS = 100_000


def check_query(query: Query) -> dict[str, Any]:
    """Refuses, naming the field, a query the Router cannot route or the durable stores could
    not keep, before anything changes; returns the metadata to log. Whether UTF-8 can encode
    the text is left to the caller (free on the native featurising path)."""
    if not isinstance(query, Query):
        raise InvalidArgument("query", f"must be a Query, got {type(query).__name__}")
    text = query.text
    if not isinstance(text, str) or not text or text.isspace():
        raise InvalidArgument("text", "must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidArgument("text", f"{len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    constraints = query.constraints
    if constraints is not None and not isinstance(constraints, Constraints):
        raise InvalidArgument(
            "constraints", f"must be a Constraints, got {type(constraints).__name__}"
        )
    metadata = query.metadata
    if metadata or type(metadata) is not dict:  # the usual {} needs no check
        metadata = check_json_object("metadata", metadata)
    # The ids feedback names the decision by later: refused now, not at Track time.
    if query.query_id is not None:
        check_id("query_id", query.query_id)
    if query.session_id is not None:
        check_id("session_id", query.session_id)
    user_id = query.user_id
    if user_id is not None:
        if not isinstance(user_id, str):
            raise InvalidArgument("user_id", f"must be a string, got {user_id!r}")
        check_unicode("user_id", user_id)
    return metadata


# Ids become store keys. PostgreSQL text cannot hold a NUL and its B-tree refuses index rows
# past ~2.7 KB (a mark's key holds a session id and an idempotency key, next to the query
# id): such ids came back UNAVAILABLE there, or left the decision unlogged, while the other
# stores took them. One limit for every backend.
MAX_KEY_BYTES = 512


def check_id(field_name: str, value: object) -> str:
    """A non-empty string id (surrounding whitespace is not part of an id) that every store
    can key by: valid Unicode, no NUL, at most MAX_KEY_BYTES in UTF-8."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(field_name, f"must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise InvalidArgument(field_name, "must not contain NUL characters")
    check_unicode(field_name, value)
    if len(value) > MAX_KEY_BYTES // 4:  # only then can it exceed the limit in UTF-8
        size = len(value.encode())
        if size > MAX_KEY_BYTES:
            raise InvalidArgument(
                field_name, f"too long: {size} bytes in UTF-8, limit {MAX_KEY_BYTES}"
            )
    return value


def check_unicode(field_name: str, value: str) -> None:
    """Refuses a string UTF-8 cannot encode: a Python str may hold a lone surrogate (a gRPC
    string never does), which the core and the durable stores would reject later with an
    error that names no field."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise InvalidArgument(
                field_name, f"not valid Unicode ({exc.reason} at position {exc.start})"
            ) from None


# json.dumps with any option builds a new encoder per call; this one is built once.
_STRICT_JSON = json.JSONEncoder(allow_nan=False)

# Deepest nesting of objects and arrays accepted in a payload or metadata. Python's JSON
# encoder recurses once per level and hit the interpreter's recursion limit near 1000 levels
# (RecursionError, not a ValueError naming the field); the stores encode again further down
# the stack. 100 is far below that and far above what a gRPC request can carry (a Struct
# stops near 35 levels under protobuf's own recursion limit).
MAX_JSON_DEPTH = 100


def check_json_object(field_name: str, value: object) -> dict[str, Any]:
    """A mapping with string keys and finite numbers, nested at most MAX_JSON_DEPTH levels,
    as a new dict: the durable stores keep it as JSON (a feedback payload, a decision's
    metadata), so every backend returns it."""
    if not isinstance(value, Mapping):
        raise InvalidArgument(field_name, f"must be a mapping, got {type(value).__name__}")
    obj = dict(value)
    for key in obj:
        if not isinstance(key, str):
            raise InvalidArgument(field_name, f"keys must be strings, got {key!r}")
    too_deep = f"nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        encoded = _STRICT_JSON.encode(obj)
    except RecursionError:
        raise InvalidArgument(field_name, too_deep) from None
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(field_name, f"must be JSON-serialisable and finite: {exc}") from None
    # Every level takes at least two characters ("{}" or "[]"), so only a long encoding can
    # be too deep: the usual small payload skips the walk.
    if len(encoded) > 2 * MAX_JSON_DEPTH and _nesting_exceeds(obj, MAX_JSON_DEPTH):
        raise InvalidArgument(field_name, too_deep)
    return obj


def _nesting_exceeds(value: object, limit: int) -> bool:
    """Whether objects/arrays in `value` nest deeper than `limit` (the top level is 1);
    iterative, so a deep value cannot exhaust the stack here."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def new_query_id() -> str:
    """A version 7 UUID (RFC 9562) as 32 hex digits: a 48-bit Unix time in milliseconds,
    then 74 random bits.

    Time-ordered on purpose: the durable stores index pending queries by id, and random
    (version 4) ids put every insert on a different B-tree page, so a group commit of ten
    decisions wrote ten scattered index pages; consecutive v7 ids share the rightmost ones.
    The random digits come from os.urandom, drawn for `_TAILS_PER_DRAW` ids at a time: one
    `os.urandom` per id was a system call (and a GIL release) on every Route, and half the
    instructions of building an id.
    """
    tail = next(_tails, None)  # one C-level step: atomic under the GIL, never yields twice
    if tail is None:
        tail = _draw_tails()
    return (time.time_ns() // 1_000_000).to_bytes(6, "big").hex() + tail


_TAILS_PER_DRAW = 256
_TAIL_DIGITS = 20  # 10 random bytes per id, version and variant bits set
_VERSION_7 = bytes((b & 0x0F) | 0x70 for b in range(256))  # first byte after the time
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # third byte: RFC 9562 variant
_tails: Iterator[str] = iter(())


def _draw_tails() -> str:
    """Refill `_tails` with fresh random tails and return one more. Threads racing here each
    install their own iterator; a replaced one's unused tails are dropped, never reused."""
    global _tails
    raw = bytearray(os.urandom(_TAILS_PER_DRAW * 10))
    raw[0::10] = raw[0::10].translate(_VERSION_7)
    raw[2::10] = raw[2::10].translate(_VARIANT)
    digits = raw.hex()
    tails = [digits[i : i + _TAIL_DIGITS] for i in range(0, len(digits), _TAIL_DIGITS)]
    _tails = iter(tails[1:])
    return tails[0]


def _forget_tails() -> None:
    # A forked child would otherwise hand out the same ids as its parent.
    global _tails
    _tails = iter(())


os.register_at_fork(after_in_child=_forget_tails)


@dataclass
class Constraints:
    """Limits the router honours while choosing (not after): models outside them are never
    candidates. `max_cost_usd` is compared with an estimated cost per call (see
    `models.estimate_cost_usd`), `max_latency_s` with each model's `expected_latency_s`."""

    max_cost_usd: float | None = None
    max_latency_s: float | None = None
    allowed_models: list[str] | None = None
    excluded_models: list[str] | None = None

    def eligible(self, specs: Mapping[str, ModelSpec], text: str) -> tuple[list[str], str]:
        """The models of `specs` these constraints allow (in catalogue order) and a short note
        for the decision's reasoning. Unknown ids in allowed/excluded -> InvalidArgument;
        nothing left -> NoEligibleModel saying which constraint removed which models."""
        candidates = list(specs)
        removed: list[str] = []
        applied: list[str] = []
        if self.allowed_models is not None:
            wanted = _known_ids(self.allowed_models, "allowed_models", specs)
            dropped = [m for m in candidates if m not in wanted]
            candidates = [m for m in candidates if m in wanted]
            applied.append("allowed_models")
            if dropped:
                removed.append(f"allowed_models removed {dropped}")
        if self.excluded_models is not None:
            unwanted = _known_ids(self.excluded_models, "excluded_models", specs)
            dropped = [m for m in candidates if m in unwanted]
            candidates = [m for m in candidates if m not in unwanted]
            applied.append("excluded_models")
            if dropped:
                removed.append(f"excluded_models removed {dropped}")
        if self.max_cost_usd is not None:
            limit = check_non_negative("constraints.max_cost_usd", self.max_cost_usd)
            tokens_in = estimate_input_tokens(text)
            dropped = [
                m
                for m in candidates
                if specs[m].cost_usd(tokens_in, EXPECTED_OUTPUT_TOKENS) > limit
            ]
            candidates = [m for m in candidates if m not in dropped]
            applied.append(f"max_cost_usd={limit:g}")
            if dropped:
                removed.append(
                    f"max_cost_usd={limit:g} removed {dropped} (estimated cost of {tokens_in} "
                    f"input + {EXPECTED_OUTPUT_TOKENS} output tokens)"
                )
        if self.max_latency_s is not None:
            limit = check_non_negative("constraints.max_latency_s", self.max_latency_s)
            dropped = [m for m in candidates if specs[m].expected_latency_s > limit]
            candidates = [m for m in candidates if m not in dropped]
            applied.append(f"max_latency_s={limit:g}")
            if dropped:
                removed.append(f"max_latency_s={limit:g} removed {dropped} (expected latency)")
        if not candidates:
            detail = "; ".join(removed) if removed else "allowed_models is empty"
            raise NoEligibleModel(f"no model satisfies the constraints: {detail}")
        return candidates, (f"; constraints: {', '.join(applied)}" if applied else "")


def _known_ids(ids: Sequence[str], field: str, specs: Mapping[str, ModelSpec]) -> set[str]:
    if isinstance(ids, str) or not isinstance(ids, Sequence | set | frozenset):
        raise InvalidArgument(f"constraints.{field}", f"must be a list of model ids, got {ids!r}")
    if not all(isinstance(m, str) for m in ids):  # an unhashable item would fail the lookup
        raise InvalidArgument(f"constraints.{field}", f"must be a list of model ids, got {ids!r}")
    unknown = [m for m in ids if m not in specs]
    if unknown:
        raise InvalidArgument(f"constraints.{field}", f"unknown model ids {unknown}")
    return set(ids)


@dataclass
class Query:
    """One request to route. `features` replaces the hashed text features when given (its
    length must be the router's feature dimension); `reward_weights` wins over `preference`."""

    text: str
    session_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    features: Sequence[float] | None = None
    preference: str | None = None
    reward_weights: RewardWeights | None = None
    constraints: Constraints | None = None
    query_id: str | None = None
    # The id __post_init__ generated, and whether a decision has used it: see decision_id.
    _generated_id: str | None = field(default=None, init=False, repr=False, compare=False)
    _routed: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.query_id is None:
            self.query_id = self._generated_id = new_query_id()

    def decision_id(self) -> str:
        """The query_id of a new decision for this query (Router.decide).

        A generated id names the first decision only: the same Query routed again is
        another decision (a retry, a regeneration), and with one id between them the
        store kept the first and credited the second's Track and feedback to the first
        one's model. An id the caller chose or set names the request, so every decision
        for it carries it (the sidecar answers a pending one's logged decision).
        """
        query_id = self.query_id
        if query_id is None:
            return new_query_id()
        if query_id is self._generated_id:
            if self._routed:
                return new_query_id()
            self._routed = True
        return query_id


@dataclass
class RoutingDecision:
    """What the router decided, from which context, with what probability, under which weights.

    `confidence` in [0, 1] is how sure the policy is that `selected_model` is the best eligible
    model for this context (from its posterior width and the score margin); `propensity` is
    the probability the policy had of choosing it, for off-policy evaluation.
    """

    query_id: str
    selected_model: str
    confidence: float
    features: list[float]
    scores: dict[str, float]
    propensity: float
    reasoning: str
    policy_version: int
    reward_weights: RewardWeights
    session_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (metadata is passed through as given)."""
        return {
            "query_id": self.query_id,
            "selected_model": self.selected_model,
            "confidence": self.confidence,
            "features": list(self.features),
            "scores": dict(self.scores),
            "propensity": self.propensity,
            "reasoning": self.reasoning,
            "policy_version": self.policy_version,
            "reward_weights": {
                "quality": self.reward_weights.quality,
                "cost": self.reward_weights.cost,
                "latency": self.reward_weights.latency,
            },
            "session_id": self.session_id,
            "user_id": self.user_id,
            "metadata": dict(self.metadata),
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingDecision:
        """Inverse of `to_dict`; a missing or malformed key raises InvalidArgument naming it."""
        try:
            weights = data["reward_weights"]
            return cls(
                query_id=str(data["query_id"]),
                selected_model=str(data["selected_model"]),
                confidence=as_number("confidence", data["confidence"]),
                features=[as_number("features", v) for v in data["features"]],
                scores={str(k): as_number("scores", v) for k, v in data["scores"].items()},
                propensity=as_number("propensity", data["propensity"]),
                reasoning=str(data["reasoning"]),
                policy_version=int(data["policy_version"]),
                reward_weights=RewardWeights(
                    weights["quality"], weights["cost"], weights["latency"]
                ),
                session_id=data.get("session_id"),
                user_id=data.get("user_id"),
                metadata=dict(data.get("metadata") or {}),
                created_at=as_number("created_at", data["created_at"]),
            )
        except KeyError as exc:
            raise InvalidArgument("decision", f"missing key {exc.args[0]!r}") from None
        except (TypeError, AttributeError) as exc:
            raise InvalidArgument("decision", f"malformed decision record: {exc}") from None
