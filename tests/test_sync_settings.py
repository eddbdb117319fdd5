"""The policy sync settings: one name each for YAML, CONDUIT_* and flags, validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from conduit_sidecar.app import SidecarApp
from conduit_sidecar.config import ConfigError, SidecarConfig, config_from_args, load_config


def test_defaults_and_flags() -> None:
    config = SidecarConfig()
    assert (config.sync_interval_s, config.snapshot_interval_s, config.state_namespace) == (
        1.0,
        60.0,
        "conduit",
    )
    parsed = config_from_args(
        ["--sync-interval-s", "0", "--snapshot-interval-s", "5", "--state-namespace", "app_2"]
    )
    assert (parsed.sync_interval_s, parsed.snapshot_interval_s, parsed.state_namespace) == (
        0.0,
        5.0,
        "app_2",
    )
    from_env = load_config(env={"CONDUIT_SYNC_INTERVAL_S": "0.25"})
    assert from_env.sync_interval_s == 0.25


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sync_interval_s", -1.0, "sync_interval_s: must be finite and >= 0"),
        ("sync_interval_s", float("nan"), "sync_interval_s"),
        ("snapshot_interval_s", 0.0, "snapshot_interval_s"),
        ("state_namespace", "Bad-Name;", "state_namespace: expected lower-case"),
    ],
)
def test_bad_values_name_the_setting(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SidecarConfig(**{field: value}).validate()  # type: ignore[arg-type]


async def test_app_restores_and_persists_policy_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conduit.db'}"
    app = await SidecarApp.create(SidecarConfig(store_url=url, sync_interval_s=0.0))
    try:
        assert app.synchronizer is not None
        model = app.router.models[0].id
        await app.router.update(
            model, 0.001, 0.9, 0.5, [1.0] + [0.0] * (app.router.feature_dim - 1)
        )
    finally:
        await app.close()
    again = await SidecarApp.create(SidecarConfig(store_url=url))
    try:
        assert again.router.policy.arm_stats()[model].updates == 1
    finally:
        await again.close()
    memory = await SidecarApp.create(SidecarConfig(store_url="memory://"))
    try:
        assert memory.synchronizer is None  # nothing could survive: no sync loop
    finally:
        await memory.close()
