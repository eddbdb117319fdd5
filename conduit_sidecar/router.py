"""Router: query -> features -> policy.select (over the eligible models) -> RoutingDecision.

The route path sits in front of every LLM call, so it stays lean: the hashing and the policy
maths are microseconds of native code and run synchronously inside the coroutine; nothing is
logged per call; constraints are resolved with a short loop over the (small) catalogue.
"""

from __future__ import annotations

import functools
import math
import struct
import time
from collections.abc import Sequence
from typing import cast, get_args

import numpy as np
from numpy.typing import NDArray

from conduit_sidecar.bandit import BanditPolicy, CoreError, FeatureHasher, PolicyConfig, PolicyKind
from conduit_sidecar.confidence import best_other, choice_confidence
from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.model_stats import ModelStats, Tally, model_stats
from conduit_sidecar.models import (
    ModelSpec,
    default_catalogue,
    lookup,
)
from conduit_sidecar.query import (
    Query,
    RoutingDecision,
    check_query,
    check_unicode,
)
from conduit_sidecar.reward import (
    PRESETS,
    RewardWeights,
    as_number,
    check_non_negative,
    check_unit,
    compose_reward,
    resolve_weights,
)

POLICY_KINDS: tuple[str, ...] = get_args(PolicyKind)
_DEFAULT_DIM = 64


_REASONING = "%s: %s (score %.3g, margin %.3g over %s, uncertainty %.3g); %s%s"
_REASONING_ALONE = "%s: %s (score %.3g, the only eligible model, uncertainty %.3g); %s%s"


@functools.lru_cache(maxsize=256)
def _eligible_counts(candidates: int, models: int) -> str:
    return f"{candidates} of {models} models eligible"


class Router:
    """Learns online which model to send each query to.

    `models`: catalogue ids (unknown ids get `ModelSpec.neutral`) or ModelSpec objects; None
    means the bundled catalogue. `policy`: a policy kind or a full PolicyConfig (whose `dim`
    is used when `feature_dim` is left at its default; `seed` applies to a kind name only).
    `reward_weights`: the default weights for queries that bring neither weights nor a
    preference.
    """

    def __init__(
        self,
        models: Sequence[str | ModelSpec] | None = None,
        *,
        policy: str | PolicyConfig = "linucb",
        feature_dim: int = _DEFAULT_DIM,
        reward_weights: RewardWeights | str = "balanced",
        seed: int = 0,
    ) -> None:
        if isinstance(models, str):  # a lone id would otherwise be read as one id per letter
            raise InvalidArgument("models", f"expected a list of model ids, got {models!r}")
        specs = default_catalogue() if models is None else [self._spec(m) for m in models]
        if not specs:
            raise InvalidArgument("models", "at least one model is required")
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.id in self._specs:
                raise InvalidArgument("models", f"duplicate model id {spec.id!r}")
            self._specs[spec.id] = spec
        self.reward_weights = resolve_weights(reward_weights)
        config = self._config(policy, feature_dim, seed, specs[0].id)
        self.feature_dim = config.dim
        try:
            self._hasher = FeatureHasher(config.dim)
        except CoreError as exc:
            raise InvalidArgument("feature_dim", str(exc)) from None
        # Compiled once: a format string per call is parsed again every time.
        self._pack_features = struct.Struct(f"<{config.dim}d").pack
        try:
            self.policy = BanditPolicy(config, list(self._specs))
        except CoreError as exc:
            raise InvalidArgument("policy", str(exc)) from None
        self._kind = config.kind
        self._tally = {model_id: Tally() for model_id in self._specs}
        # When each model added at run time joined (time.time()): its arm starts empty, so
        # feedback for a query routed before then belongs to an earlier arm of that id.
        self._added_at: dict[str, float] = {}

    @staticmethod
    def _spec(model: str | ModelSpec) -> ModelSpec:
        if isinstance(model, ModelSpec):
            return model
        if isinstance(model, str) and model.strip():
            try:
                return lookup(model)
            except InvalidArgument as exc:  # an id no model can have (see ModelSpec)
                raise InvalidArgument("models", str(exc)) from None
        raise InvalidArgument("models", f"expected a model id or ModelSpec, got {model!r}")

    @staticmethod
    def _config(
        policy: str | PolicyConfig, feature_dim: int, seed: int, first_model: str
    ) -> PolicyConfig:
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise InvalidArgument("feature_dim", f"must be a positive integer, got {feature_dim!r}")
        if isinstance(policy, PolicyConfig):
            if feature_dim not in (_DEFAULT_DIM, policy.dim):
                raise InvalidArgument(
                    "feature_dim", f"{feature_dim} contradicts PolicyConfig.dim={policy.dim}"
                )
            return policy
        if policy not in POLICY_KINDS:
            raise InvalidArgument(
                "policy", f"unknown kind {policy!r}; expected one of {POLICY_KINDS}"
            )
        fixed_arm = first_model if policy == "fixed" else None
        return PolicyConfig(
            kind=cast(PolicyKind, policy),
            dim=feature_dim,
            seed=seed,
            fixed_arm=fixed_arm,
            reward_offset=0.5,  # prior mean of a reward in [0, 1] (BENCHMARKS.md, learning)
        )

    # ----------------------------------------------------------------- catalogue

    @property
    def models(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def model(self, model_id: str) -> ModelSpec:
        try:
            spec = self._specs.get(model_id)
        except TypeError:  # an unhashable id (a list, a dict): unknown, not a crash
            spec = None
        if spec is None:
            raise InvalidArgument("model_id", f"unknown model {model_id!r}")
        return spec

    def add_model(self, spec: ModelSpec | str) -> None:
        resolved = self._spec(spec)
        if resolved.id in self._specs:
            raise InvalidArgument("model_id", f"model {resolved.id!r} is already routed")
        try:
            self.policy.add_arm(resolved.id)
        except CoreError as exc:
            raise InvalidArgument("model_id", str(exc)) from None
        self._specs[resolved.id] = resolved
        self._tally[resolved.id] = Tally()
        self._added_at[resolved.id] = time.time()

    def remove_model(self, model_id: str) -> None:
        self.model(model_id)
        if len(self._specs) == 1:
            raise InvalidArgument("model_id", f"cannot remove {model_id!r}, the last model")
        try:
            self.policy.remove_arm(model_id)
        except CoreError as exc:
            raise InvalidArgument("model_id", str(exc)) from None
        del self._specs[model_id]
        del self._tally[model_id]

    # ----------------------------------------------------------------- routing

    async def route(self, query: Query) -> RoutingDecision:
        """Choose a model for `query` among those its constraints allow."""
        return self.decide(query)

    def decide(self, query: Query) -> RoutingDecision:
        """Synchronous body of `route` (for simulations and non-async callers)."""
        metadata = check_query(query)  # first: it also refuses a `query` that is no Query
        text = query.text
        weights = self._weights(query)
        note = ""
        allowed: list[str] | None = None
        if query.constraints is not None:
            eligible, note = query.constraints.eligible(self._specs, text)
            if len(eligible) < len(self._specs):  # else the policy's own full list is cheaper
                allowed = eligible
        if query.features is None:
            # Featurise, select, runner-up and margin in one native call.
            try:
                arm, scores, propensity, uncertainty, runner_up, margin, features, version = (
                    self.policy.route(self._hasher, text, allowed)
                )
            except UnicodeEncodeError:
                check_unicode("text", text)  # raises InvalidArgument naming the field
                raise
        else:
            check_unicode("text", text)
            x = self.check_features(query.features, "features")
            selection = self.policy.select(x, allowed)
            arm, scores = selection.arm, selection.scores
            propensity, uncertainty = selection.propensity, selection.uncertainty
            runner_up, margin = best_other(scores, arm)
            features, version = x.tolist(), self.policy.version
        candidates = len(scores)
        confidence = choice_confidence(candidates, margin, uncertainty)
        # %-formatting and the cached counts: the f-string this replaces (same text) cost
        # about a fifth of decide's Python, most of it formatting the numbers.
        counts = _eligible_counts(candidates, len(self._specs))
        if runner_up is not None:
            reasoning = _REASONING % (
                self._kind,
                arm,
                scores[arm],
                margin,
                runner_up,
                uncertainty,
                counts,
                note,
            )
        else:
            reasoning = _REASONING_ALONE % (self._kind, arm, scores[arm], uncertainty, counts, note)
        self._tally[arm].selections += 1
        # Positional: keyword arguments to a dataclass cost twice as much (a dict per call).
        return RoutingDecision(
            query.decision_id(),
            arm,
            confidence,
            features,
            scores,
            propensity,
            reasoning,
            version,
            weights,
            query.session_id,
            query.user_id,
            metadata,
        )

    def _weights(self, query: Query) -> RewardWeights:
        weights = query.reward_weights
        if weights is not None:
            if not isinstance(weights, RewardWeights):
                raise InvalidArgument("reward_weights", f"expected RewardWeights, got {weights!r}")
            return weights
        preference = query.preference
        if preference is None or preference == "":  # "": a proto3 string left unset
            return self.reward_weights
        # Only a str can name a preset (an unhashable value would fail the lookup itself).
        preset = PRESETS.get(preference) if isinstance(preference, str) else None
        if preset is None:
            raise InvalidArgument(
                "preference", f"unknown preset {preference!r}; expected one of {sorted(PRESETS)}"
            )
        return preset

    def check_features(self, features: Sequence[float], field: str) -> NDArray[np.float64]:
        """A caller's feature vector as float64, refusing a wrong length or non-finite value."""
        if type(features) is list and len(features) == self.feature_dim:
            # The usual input (a request's features, a logged decision's on every feedback):
            # a finite sum proves every value finite, and packing beats NumPy's generic
            # sequence conversion by 2x. Anything else takes the checks below.
            try:
                finite = math.isfinite(sum(features))
                packed = self._pack_features(*features)
            except (TypeError, struct.error, OverflowError):  # OverflowError: an int > float
                finite = False
            if finite:
                return np.frombuffer(packed, dtype=np.float64)
        if isinstance(features, str | bytes):
            raise InvalidArgument(field, "must be a sequence of numbers")
        try:
            x = np.asarray(features, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidArgument(field, "must be a sequence of numbers") from None
        except OverflowError:  # an int beyond float range
            raise InvalidArgument(field, "values must be finite") from None
        if x.ndim != 1 or x.shape[0] != self.feature_dim:
            raise InvalidArgument(
                field, f"expected {self.feature_dim} values, got shape {tuple(x.shape)}"
            )
        if not np.isfinite(x).all():
            raise InvalidArgument(field, "values must be finite")
        return x

    # ----------------------------------------------------------------- learning

    async def update(
        self,
        model_id: str,
        cost: float | None,
        quality_score: float,
        latency: float | None,
        features: Sequence[float],
        confidence: float = 1.0,
        reward_weights: RewardWeights | str | None = None,
    ) -> float:
        """Immediate feedback (spec pattern 2): compose the reward, apply it with weight
        `confidence`, record cost and latency. Returns the reward applied. Everything is
        validated before anything changes."""
        self.model(model_id)
        cost_usd = None if cost is None else check_non_negative("cost", cost)
        latency_s = None if latency is None else check_non_negative("latency", latency)
        quality = check_unit("quality_score", quality_score)
        weight = check_unit("confidence", confidence)
        x = self.check_features(features, "features")
        weights = (
            self.reward_weights
            if reward_weights is None
            else resolve_weights(reward_weights, "reward_weights")
        )
        reward = compose_reward(weights, quality, cost_usd, latency_s)
        if weight > 0.0:
            self.policy.update(model_id, x, reward, weight)
        self._record(model_id, cost_usd, latency_s)
        return reward

    def apply_observation(
        self,
        model_id: str,
        features: Sequence[float],
        old: tuple[float, float] | None,
        new: tuple[float, float],
        *,
        routed_at: float | None = None,
    ) -> None:
        """Move a query's single observation from `old` (reward, weight) to `new` by the net
        delta (DESIGN section 2); `old` None means the query had no observation yet. The
        weight of an observation never decreases, so the policy only gains positive rank-1
        terms. `routed_at` (the decision's `created_at`) refuses a query routed before
        `model_id` was last added: its observation, or the one being replaced, was never
        part of the current arm."""
        self.model(model_id)
        # A number: a RoutingDecision built by hand can hold anything, and a TypeError here
        # escaped the collector after the store had kept the signal.
        if routed_at is not None and as_number("routed_at", routed_at) < self._added_at.get(
            model_id, -math.inf
        ):
            raise InvalidArgument(
                "model_id",
                f"{model_id!r} was added again after this query was routed; "
                "its new arm does not learn from the earlier arm's queries",
            )
        x = self.check_features(features, "features")
        new_reward, new_weight = _pair(new, "new")
        if old is None:
            if new_weight > 0.0:
                self.policy.update(model_id, x, new_reward, new_weight)
            return
        old_reward, old_weight = _pair(old, "old")
        if new_weight < old_weight:
            raise InvalidArgument(
                "new", f"weight {new_weight} is below the previous weight {old_weight}"
            )
        if (old_reward, old_weight) == (new_reward, new_weight):
            return
        self.policy.reapply(model_id, x, old_reward, old_weight, new_reward, new_weight)

    def retract_selection(self, model_id: str) -> None:
        """Takes back the selection `decide` counted for a decision that was not answered: a
        Route whose client-chosen query_id was already pending answers the logged one."""
        tally = self._tally.get(model_id)
        if tally is not None and tally.selections > 0:
            tally.selections -= 1

    def record_outcome(
        self, model_id: str, cost_usd: float | None, latency_s: float | None
    ) -> None:
        """Count one call's outcome in `stats()` (it does not change the policy)."""
        self.model(model_id)
        cost = None if cost_usd is None else check_non_negative("cost_usd", cost_usd)
        latency = None if latency_s is None else check_non_negative("latency_s", latency_s)
        self._record(model_id, cost, latency)

    def _record(self, model_id: str, cost_usd: float | None, latency_s: float | None) -> None:
        tally = self._tally[model_id]
        tally.outcomes += 1
        if cost_usd is not None:
            tally.cost_usd_sum += cost_usd
        if latency_s is not None:
            tally.latency_s_sum += latency_s

    def stats(self) -> dict[str, ModelStats]:
        return model_stats(self._tally, self.policy.arm_stats())


def _pair(value: tuple[float, float], field: str) -> tuple[float, float]:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise InvalidArgument(field, f"expected (reward, weight), got {value!r}")
    return check_unit(f"{field}.reward", value[0]), check_unit(f"{field}.weight", value[1])
