"""Per-model totals the Router reports (`Router.stats()`, GetStats): its own per-process
counts next to the sums the policy learned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from conduit_sidecar.bandit import ArmStats


@dataclass(frozen=True)
class ModelStats:
    """Per-model totals. Reward sums come from the policy's own (confidence-weighted)
    statistics, so `mean_reward = reward_sum / weight_sum` (clamped to [0, 1]) matches what
    the policy learned."""

    selections: int
    outcomes: int
    weight_sum: float
    mean_reward: float
    cost_usd_sum: float
    latency_s_sum: float
    updates: int


class Tally:
    """What the Router counts per model itself (per process: not exchanged between replicas)."""

    __slots__ = ("cost_usd_sum", "latency_s_sum", "outcomes", "selections")

    def __init__(self) -> None:
        self.selections = 0
        self.outcomes = 0
        self.cost_usd_sum = 0.0
        self.latency_s_sum = 0.0


def model_stats(
    tallies: Mapping[str, Tally], arms: Mapping[str, ArmStats]
) -> dict[str, ModelStats]:
    """One ModelStats per model of `tallies`, with the learned sums of its arm in `arms`."""
    result: dict[str, ModelStats] = {}
    for model_id, tally in tallies.items():
        arm = arms.get(model_id)
        weight_sum = arm.weight_sum if arm is not None else 0.0
        reward_sum = arm.reward_sum if arm is not None else 0.0
        result[model_id] = ModelStats(
            selections=tally.selections,
            outcomes=tally.outcomes,
            weight_sum=weight_sum,
            mean_reward=_mean_reward(reward_sum, weight_sum),
            cost_usd_sum=tally.cost_usd_sum,
            latency_s_sum=tally.latency_s_sum,
            updates=arm.updates if arm is not None else 0,
        )
    return result


def _mean_reward(reward_sum: float, weight_sum: float) -> float:
    """`reward_sum / weight_sum` in [0, 1] (0 before any weight). With discount < 1 a
    re-applied observation moves the sums by its undecayed net delta, so the raw ratio can
    leave [0, 1] (the sums themselves must stay exact for later deltas to telescope)."""
    if weight_sum <= 0.0:
        return 0.0
    return min(1.0, max(0.0, reward_sum / weight_sum))
