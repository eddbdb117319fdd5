"""model_stats: the Router's per-process counts next to the sums the policy learned."""

from __future__ import annotations

from conduit_sidecar.bandit import ArmStats
from conduit_sidecar.model_stats import ModelStats, Tally, model_stats


def test_counts_and_learned_sums_are_reported_per_model() -> None:
    tally = Tally()
    tally.selections, tally.outcomes = 3, 2
    tally.cost_usd_sum, tally.latency_s_sum = 0.004, 1.5
    stats = model_stats({"a": tally, "b": Tally()}, {"a": ArmStats(2.0, 1.5, 2)})
    assert stats["a"] == ModelStats(3, 2, 2.0, 0.75, 0.004, 1.5, 2)
    # A model the policy has no arm for yet (or no weight): zeros, not a division by zero.
    assert stats["b"] == ModelStats(0, 0, 0.0, 0.0, 0.0, 0.0, 0)


def test_the_mean_reward_stays_in_the_unit_interval() -> None:
    # Under discounting the raw sums can leave [0, 1] (see _mean_reward); the report may not.
    low = model_stats({"a": Tally()}, {"a": ArmStats(0.5, -0.25, 1)})["a"].mean_reward
    high = model_stats({"a": Tally()}, {"a": ArmStats(0.5, 512.0, 1)})["a"].mean_reward
    assert (low, high) == (0.0, 1.0)
