"""A query's observation as pure functions of its accumulators (DESIGN section 2).

Each query keeps `quality_num = sum c*q`, `quality_den = sum c` and `weight = max c` (never
above 1), plus the outcome from Track (`cost_usd`, `latency_s`). The policy sees one
observation per query: reward = compose_reward(weights, quality_num / quality_den, cost,
latency) with weight `weight`. Every store operation returns the accumulators before and
after it; the collector maps both through `observation` and applies the net delta, so the
deltas of consecutive operations telescope and the policy ends where one sequential process
would, whatever the interleaving.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from conduit_sidecar.frozen import fast_frozen
from conduit_sidecar.reward import RewardWeights, compose_reward

# Confidence of the implicit signals Track derives (DESIGN "Confidence Weighting"):
# an errored call is a strong negative, a call that needed retries a weak one.
ERROR_CONFIDENCE = 0.8
RETRY_CONFIDENCE = 0.5


@fast_frozen
@dataclass(frozen=True)
class Accumulators:
    """The stored state of one query's observation."""

    quality_num: float = 0.0
    quality_den: float = 0.0
    weight: float = 0.0
    cost_usd: float | None = None
    latency_s: float | None = None


@fast_frozen
@dataclass(frozen=True)
class Contribution:
    """What one operation adds: quality mass, confidence mass, a weight candidate, and
    optionally the outcome (None leaves the stored cost/latency as they are)."""

    quality_num: float = 0.0
    quality_den: float = 0.0
    weight: float = 0.0
    cost_usd: float | None = None
    latency_s: float | None = None

    @classmethod
    def signals(cls, pairs: Iterable[tuple[float, float]]) -> Contribution:
        """Sum (quality, confidence) pairs into one contribution."""
        num = den = weight = 0.0
        for quality, confidence in pairs:
            num += confidence * quality
            den += confidence
            weight = max(weight, confidence)
        return cls(quality_num=num, quality_den=den, weight=min(1.0, weight))

    def with_outcome(self, cost_usd: float | None, latency_s: float | None) -> Contribution:
        return Contribution(self.quality_num, self.quality_den, self.weight, cost_usd, latency_s)


def accumulate(acc: Accumulators, contribution: Contribution) -> Accumulators:
    """The accumulators after one contribution (the Python stores' update rule; the Redis
    store performs the same rule inside its Lua script)."""
    return Accumulators(
        quality_num=acc.quality_num + contribution.quality_num,
        quality_den=acc.quality_den + contribution.quality_den,
        weight=min(1.0, max(acc.weight, contribution.weight)),
        cost_usd=acc.cost_usd if contribution.cost_usd is None else contribution.cost_usd,
        latency_s=acc.latency_s if contribution.latency_s is None else contribution.latency_s,
    )


def quality(acc: Accumulators) -> float | None:
    """The confidence-weighted blend of the signals so far, or None before any weight."""
    if acc.quality_den <= 0.0:
        return None
    blend = acc.quality_num / acc.quality_den
    # Float sums can land a hair outside [0, 1]; never hand the core 1.0000000000000002.
    return min(1.0, max(0.0, blend)) if math.isfinite(blend) else None


def observation(acc: Accumulators, weights: RewardWeights) -> tuple[float, float] | None:
    """(reward, weight) the policy should hold for this query, or None for no observation.

    A query with no weighted signal (only a decision, or a Track without error or retries)
    has no observation yet: cost and latency alone say nothing about answer quality.
    """
    blend = quality(acc)
    weight = min(1.0, acc.weight)
    if blend is None or weight <= 0.0:
        return None
    reward = compose_reward(weights, blend, acc.cost_usd, acc.latency_s)
    return (reward, weight)


def track_contribution(
    error: bool, retries: int, cost_usd: float | None, latency_s: float | None
) -> Contribution:
    """The implicit signals of one Track call, plus its outcome."""
    pairs: list[tuple[float, float]] = []
    if error:
        pairs.append((0.0, ERROR_CONFIDENCE))
    if retries > 0:
        pairs.append((0.0, RETRY_CONFIDENCE))
    return Contribution.signals(pairs).with_outcome(cost_usd, latency_s)
