"""Reward composition: quality, cost and latency folded into one number in [0, 1].

DESIGN section 4: `reward = w_q*quality + w_c*cost_score + w_l*latency_score`, with the weights
fixed per decision at route time. Cost and latency span several orders of magnitude between
models (a short call on a small model costs ~$0.0002, the same call on a frontier model ~$0.02),
so both are scored on a log scale between two documented anchors; the reference's `1/(1+cost)`
gives 0.9998 and 0.98 for those two calls, which is no signal at all.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.frozen import fast_frozen

# Cost anchors (USD per call). At or below COST_FREE_USD a call scores 1; at or above
# COST_CEILING_USD it scores 0; in between the score falls linearly in log10(cost).
# With these anchors: $0.0002 -> 0.89, $0.002 -> 0.52, $0.02 -> 0.15.
COST_FREE_USD = 1e-4
COST_CEILING_USD = 5e-2
# Latency anchors (seconds per call), same construction: 0.2 s -> 1, 1 s -> 0.68,
# 5 s -> 0.36, 30 s -> 0.
LATENCY_FAST_S = 0.2
LATENCY_CEILING_S = 30.0

_COST_SPAN = math.log10(COST_CEILING_USD / COST_FREE_USD)
_LATENCY_SPAN = math.log10(LATENCY_CEILING_S / LATENCY_FAST_S)


def as_number(field: str, value: object) -> float:
    """A real number (int, float, numpy scalar; not bool) as float, else InvalidArgument."""
    if type(value) is float:  # the common case, without the numbers.Real ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(field, f"must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float range (JSON integers are unbounded)
        raise InvalidArgument(field, "must be a finite number, got a larger integer") from None


def check_non_negative(field: str, value: object) -> float:
    """A finite number >= 0, else InvalidArgument naming `field`."""
    number = as_number(field, value)
    if not math.isfinite(number) or number < 0.0:
        raise InvalidArgument(field, f"must be finite and >= 0, got {value!r}")
    return number


def check_unit(field: str, value: object) -> float:
    """A finite number in [0, 1] (quality, reward, confidence), else InvalidArgument."""
    number = as_number(field, value)
    if not 0.0 <= number <= 1.0:  # also refuses NaN
        raise InvalidArgument(field, f"must be in [0, 1], got {value!r}")
    return number


@fast_frozen
@dataclass(frozen=True)
class RewardWeights:
    """Non-negative weights of quality, cost and latency, normalised to sum to 1.

    Any non-negative triple with a positive sum is accepted and rescaled, so
    `RewardWeights(3, 1, 1)` equals `RewardWeights(0.6, 0.2, 0.2)`.
    """

    quality: float
    cost: float
    latency: float

    def __post_init__(self) -> None:
        values = (self.quality, self.cost, self.latency)
        q, c, lat = (
            check_non_negative(f"reward_weights.{name}", value)
            for name, value in zip(("quality", "cost", "latency"), values, strict=True)
        )
        total = q + c + lat
        if total == math.inf:
            # Finite weights whose sum overflows: dividing by inf would zero all three.
            scale = max(q, c, lat)
            q, c, lat = q / scale, c / scale, lat / scale
            total = q + c + lat
        if total <= 0.0:
            raise InvalidArgument("reward_weights", "at least one weight must be positive")
        # frozen dataclass: normalising in place needs object.__setattr__.
        object.__setattr__(self, "quality", q / total)
        object.__setattr__(self, "cost", c / total)
        object.__setattr__(self, "latency", lat / total)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.quality, self.cost, self.latency)


PRESETS: dict[str, RewardWeights] = {
    "balanced": RewardWeights(0.6, 0.2, 0.2),
    "quality": RewardWeights(0.8, 0.1, 0.1),
    "cost": RewardWeights(0.3, 0.6, 0.1),
    "speed": RewardWeights(0.3, 0.1, 0.6),
}


def resolve_weights(value: RewardWeights | str, field: str = "reward_weights") -> RewardWeights:
    """A preset name or explicit weights -> RewardWeights; unknown preset -> InvalidArgument."""
    if isinstance(value, RewardWeights):
        return value
    if isinstance(value, str):
        weights = PRESETS.get(value)
        if weights is None:
            raise InvalidArgument(
                field, f"unknown preset {value!r}; expected one of {sorted(PRESETS)}"
            )
        return weights
    raise InvalidArgument(field, f"expected a preset name or RewardWeights, got {value!r}")


def _log_score(value: float, low: float, span_decades: float) -> float:
    if value <= low:
        return 1.0
    score = 1.0 - math.log10(value / low) / span_decades
    return min(1.0, max(0.0, score))


def cost_score(cost_usd: float) -> float:
    """Map a call's cost in USD to [0, 1], 1 = cheap (log scale between the anchors above)."""
    return _log_score(check_non_negative("cost_usd", cost_usd), COST_FREE_USD, _COST_SPAN)


def latency_score(latency_s: float) -> float:
    """Map a call's latency in seconds to [0, 1], 1 = fast (log scale between the anchors)."""
    return _log_score(check_non_negative("latency_s", latency_s), LATENCY_FAST_S, _LATENCY_SPAN)


def compose_reward(
    weights: RewardWeights,
    quality: float,
    cost_usd: float | None,
    latency_s: float | None,
) -> float:
    """Fold quality, cost and latency into one reward in [0, 1].

    A missing cost or latency (None) is not guessed: its weight moves to quality, so a query
    with only a thumbs-up still earns a full-range reward.
    """
    q = check_unit("quality", quality)
    w_q, w_c, w_l = weights.quality, weights.cost, weights.latency
    total = w_q * q
    if cost_usd is None:
        total += w_c * q
    else:
        total += w_c * cost_score(cost_usd)
    if latency_s is None:
        total += w_l * q
    else:
        total += w_l * latency_score(latency_s)
    # The weights sum to 1 up to rounding; clip so the core never sees 1.0000000000000002.
    return min(1.0, max(0.0, total))
