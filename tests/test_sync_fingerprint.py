"""Snapshot fingerprints: what makes stored statistics unusable, and what the operator is told."""

from __future__ import annotations

import dataclasses

import pytest

from conduit_sidecar.bandit import BanditPolicy, PolicyConfig
from conduit_sidecar.sync.fingerprint import (
    IncompatibleSnapshot,
    check_compatible,
    feature_map_digest,
    fingerprint,
)
from conduit_sidecar.sync.folding import merge_records, reconcile_arms
from conduit_sidecar.sync.state_store import DeltaRecord

HINT = "delete the Redis keys ns:policy:base and ns:policy:deltas"


def test_same_settings_pass_and_selection_settings_do_not_matter() -> None:
    config = PolicyConfig(dim=16)
    tuned = dataclasses.replace(config, alpha=3.0, epsilon=0.3, seed=9)
    check_compatible(fingerprint(config), fingerprint(tuned), where="x", reset_hint=HINT)


def test_other_dimension_names_the_flag_and_the_way_out() -> None:
    with pytest.raises(IncompatibleSnapshot) as refused:
        check_compatible(
            fingerprint(PolicyConfig(dim=64)),
            fingerprint(PolicyConfig(dim=32)),
            where="redis (keys ns:policy:*)",
            reset_hint=HINT,
        )
    message = str(refused.value)
    assert "written with feature_dim=64" in message and "uses feature_dim=32" in message
    assert "--feature-dim 64" in message and HINT in message and "hasher" not in message
    assert set(refused.value.differences) == {"feature_dim"}


def test_changed_feature_map_is_refused_even_at_the_same_dimension() -> None:
    stored = fingerprint(PolicyConfig(dim=16)) | {"hasher": "0000000000000000"}
    with pytest.raises(IncompatibleSnapshot, match="maps text to features differently"):
        check_compatible(stored, fingerprint(PolicyConfig(dim=16)), where="x", reset_hint=HINT)


def test_policy_family_and_statistics_settings_are_refused() -> None:
    for changed in (
        PolicyConfig(dim=16, kind="beta_ts"),
        PolicyConfig(dim=16, ridge=2.0),
        PolicyConfig(dim=16, discount=0.99),
    ):
        with pytest.raises(IncompatibleSnapshot):
            check_compatible(
                fingerprint(PolicyConfig(dim=16)), fingerprint(changed), where="x", reset_hint=HINT
            )


def test_feature_map_digest_is_stable_and_depends_on_the_dimension() -> None:
    feature_map_digest.cache_clear()
    first = feature_map_digest(16)
    feature_map_digest.cache_clear()
    assert feature_map_digest(16) == first
    assert feature_map_digest(32) != first


def test_reconcile_keeps_remaining_arms_and_adds_new_ones_fresh() -> None:
    policy = BanditPolicy(PolicyConfig(dim=8), ["a", "b", "c"])
    policy.update("a", [1.0] + [0.0] * 7, 0.7)
    change = reconcile_arms(policy, ["a", "d"])
    assert (change.removed, change.added) == (["b", "c"], ["d"])
    assert sorted(policy.arms) == ["a", "d"]
    stats = policy.arm_stats()
    assert stats["a"].updates == 1 and stats["d"].updates == 0


def test_a_corrupt_delta_is_skipped_and_the_rest_merged(caplog: pytest.LogCaptureFixture) -> None:
    source = BanditPolicy(PolicyConfig(dim=8), ["a"])
    source.update("a", [1.0] + [0.0] * 7, 0.5)
    good = source.take_delta()
    target = BanditPolicy(PolicyConfig(dim=8), ["a"])
    records = [
        DeltaRecord("1", "r1", b"not a delta"),
        DeltaRecord("2", "r1", good),
        DeltaRecord("3", "r2", good[:-3]),  # truncated: the CRC check must catch it
    ]
    assert merge_records(target, records) == 2
    assert target.arm_stats()["a"].updates == 1
    assert "skipping policy delta 1 from replica r1" in caplog.text
    assert "skipping policy delta 3 from replica r2" in caplog.text
