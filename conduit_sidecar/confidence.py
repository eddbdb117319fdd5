"""How sure a routing decision is: the runner-up, the margin over it, and a confidence.

The confidence is what `RoutingDecision.confidence` reports (the spec's "how sure the router
is"), computed from the chosen model's score margin over the best other candidate and its
posterior width. The native `BanditPolicy.route` returns the runner-up and margin itself;
`best_other` is the same rule for selections made from caller-supplied features.
"""

from __future__ import annotations

import math

SQRT2 = math.sqrt(2.0)


def best_other(scores: dict[str, float], arm: str) -> tuple[str | None, float]:
    """The first best-scored other candidate and the chosen arm's margin over it (what the
    native `BanditPolicy.route` returns; this is for features given by the caller)."""
    runner_up, second = None, -math.inf
    for name, score in scores.items():
        if score > second and name != arm:
            runner_up, second = name, score
    return runner_up, (scores[arm] - second if runner_up is not None else math.inf)


def choice_confidence(candidates: int, margin: float, uncertainty: float) -> float:
    """How sure the policy is that the chosen model is the best candidate.

    z = (score of the choice - best other score) / posterior width of the choice; confidence
    interpolates from 1/k (z = 0: a coin toss among k candidates) to 1 (z >> 0) and towards 0
    when the policy explored a lower-scored arm (z < 0). For two candidates this is Phi(z).
    """
    if candidates <= 1:
        return 1.0
    base = 1.0 / candidates
    if not math.isfinite(margin):
        # No other candidate scored above -inf, or an unexplored arm scored +inf (UCB1):
        # an exploration step, not certainty.
        return base
    if uncertainty > 0.0:
        z = margin / uncertainty
    else:
        z = math.copysign(math.inf, margin) if margin else 0.0
    confidence = base + (1.0 - base) * math.erf(z / SQRT2)
    # Clamped to [0, 1] as min(1.0, max(0.0, c)) would (NaN -> 0.0), by comparisons: the
    # builtins' generic argument handling cost half of this function on every Route.
    if confidence >= 1.0:
        return 1.0
    if confidence > 0.0:
        return confidence
    return 0.0
