"""Configuration: defaults, YAML < environment < flags, and errors that name the setting."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from conduit_sidecar.config import (
    ConfigError,
    SidecarConfig,
    add_arguments,
    config_from_args,
    default_store_url,
    load_config,
)


def test_defaults_are_loopback_and_the_embedded_sqlite_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/var/state")
    config = load_config(env={})
    assert config.listen == "127.0.0.1:50051"
    assert config.store_url == "sqlite:////var/state/conduit/conduit.db" == default_store_url()
    assert (config.policy, config.feature_dim, config.ttl_s) == ("linucb", 64, 3600.0)
    assert config.token is None and config.metrics_port is None and not config.json_logs


def test_default_store_falls_back_to_home_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert default_store_url() == "sqlite:////home/someone/.local/state/conduit/conduit.db"


def test_precedence_yaml_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "conduit.yaml"
    path.write_text("policy: ucb1\nfeature_dim: 32\nttl_s: 60\njson_logs: true\nseed: 3\n")
    env = {"CONDUIT_CONFIG": str(path), "CONDUIT_FEATURE_DIM": "48", "CONDUIT_TTL_S": "120"}
    config = load_config(flags={"ttl_s": "30"}, env=env)
    assert config.policy == "ucb1"  # YAML only
    assert config.feature_dim == 48  # env over YAML
    assert config.ttl_s == 30.0  # flag over env
    assert config.json_logs is True and config.seed == 3


def test_flags_parse_like_the_cli(tmp_path: Path) -> None:
    config = config_from_args(
        ["--listen", "0.0.0.0:6000", "--store-url", "memory://", "--metrics-port", "9464",
         "--json-logs", "--max-pending", "500", "--preference", "cost"]
    )  # fmt: skip
    assert config.listen == "0.0.0.0:6000" and config.store_scheme == "memory"
    assert config.metrics_port == 9464 and config.json_logs and config.max_pending == 500
    assert config.preference == "cost"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--no-json-logs"]).json_logs is False


def test_empty_env_value_unsets_an_optional_setting() -> None:
    assert load_config(env={"CONDUIT_METRICS_PORT": ""}).metrics_port is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONDUIT_LISTEN": "50051"}, "listen: expected host:port"),
        ({"CONDUIT_LISTEN": "127.0.0.1:70000"}, "listen"),
        ({"CONDUIT_POLICY": "greedy"}, "policy: expected one of"),
        ({"CONDUIT_PREFERENCE": "fastest"}, "preference"),
        ({"CONDUIT_STORE_URL": "mysql://x"}, "store_url"),
        ({"CONDUIT_STORE_URL": "sqlite:///"}, "store_url: sqlite:/// needs a path"),
        ({"CONDUIT_FEATURE_DIM": "0"}, "feature_dim: must be > 0"),
        ({"CONDUIT_FEATURE_DIM": "sixty"}, "feature_dim (CONDUIT_FEATURE_DIM): expected int"),
        ({"CONDUIT_FEATURE_DIM": "6.5"}, "feature_dim (CONDUIT_FEATURE_DIM): expected int"),
        ({"CONDUIT_TTL_S": "nan"}, "ttl_s: must be finite and > 0"),
        ({"CONDUIT_TTL_S": "-1"}, "ttl_s"),
        ({"CONDUIT_GRACE_S": "inf"}, "grace_s"),
        ({"CONDUIT_JSON_LOGS": "maybe"}, "json_logs (CONDUIT_JSON_LOGS): expected bool"),
        ({"CONDUIT_METRICS_PORT": "-5"}, "metrics_port"),
        ({"CONDUIT_TLS_CERT": "/nonexistent.pem"}, "tls_cert/tls_key: set both"),
        ({"CONDUIT_TLS_CERT": "/no.pem", "CONDUIT_TLS_KEY": "/no.key"}, "tls_cert: no such file"),
        ({"CONDUIT_CATALOGUE": "/no/models.yaml"}, "catalogue: no such file"),
        ({"CONDUIT_TOKEN": " "}, "token: must not be blank"),
        ({"CONDUIT_MAX_MESSAGE_BYTES": "0"}, "max_message_bytes"),
        ({"CONDUIT_SQLITE_SYNCHRONOUS": "OFF"}, "sqlite_synchronous: expected FULL or NORMAL"),
        (
            {"CONDUIT_SQLITE_DECISION_DURABILITY": "eventually"},
            "sqlite_decision_durability: expected buffered or commit",
        ),
        ({"CONDUIT_CONFIG": "/no/conduit.yaml"}, "config: cannot read"),
        # Each of these used to pass validation and then fail at start-up with a traceback
        # (logging's "Unknown level", grpc's OverflowError), or, for a TTL beyond what Redis
        # can expire, leave every decision unlogged and every Track UNAVAILABLE.
        ({"CONDUIT_LOG_LEVEL": "verbose"}, "log_level: expected one of"),
        ({"CONDUIT_MAX_MESSAGE_BYTES": str(2**31)}, "max_message_bytes: must be between"),
        # Responses obey the limit too: with 300 bytes ListModels and Route(include_features)
        # failed RESOURCE_EXHAUSTED after routing, with a traceback in the log per call.
        ({"CONDUIT_MAX_MESSAGE_BYTES": "300"}, "max_message_bytes: must be between 65536"),
        # The Router refuses texts past 100,000 characters: a larger limit was silently void.
        ({"CONDUIT_MAX_TEXT_CHARS": "100001"}, "max_text_chars: must be at most 100000"),
        # redis-py took a database that is not a number as database 0, another deployment's.
        ({"CONDUIT_STORE_URL": "redis://127.0.0.1:6390/abc"}, "Redis database after the host"),
        ({"CONDUIT_TTL_S": "1e300"}, "ttl_s: must be at most"),
        # A header value is printable ASCII: no client could send this token, and every
        # call was UNAUTHENTICATED (grpc clients refuse it as "Invalid metadata").
        ({"CONDUIT_TOKEN": "t\u00f6k\u00e9n"}, "token: must be printable ASCII"),
        ({"CONDUIT_TOKEN": "abc\x01def"}, "token: must be printable ASCII"),
    ],
)
def test_bad_settings_name_themselves(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must hold a mapping"),
        ("polcy: ucb1\n", "unknown setting(s) polcy"),
        ("feature_dim: [1, 2]\n", "feature_dim (config file"),
        ("policy: [unclosed\n", "not valid YAML"),
        ("json_logs: 1.5\n", "json_logs"),
        ("feature_dim: true\n", "expected int"),
        # YAML turns these into a number and a bool; str() of them is not what was written.
        ("token: 0123\n", "token (config file"),
        ("policy: on\n", "expected a string (quote it), got True"),
    ],
)
def test_bad_yaml_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "conduit.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(env={}, config_path=str(path))
    assert message in str(info.value)


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "conduit.yaml"
    path.write_text("")
    assert load_config(env={}, config_path=str(path)) == load_config(env={})


def test_tls_and_catalogue_files_must_exist_together(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    config = SidecarConfig(tls_cert=str(cert), tls_key=str(key)).validate()
    assert config.tls_cert == str(cert)


def test_decision_durability_reaches_the_sqlite_store(tmp_path: Path) -> None:
    from conduit_sidecar.app import build_store
    from conduit_sidecar.feedback import SqliteFeedbackStore

    for durability in ("buffered", "commit"):
        config = load_config(
            env={
                "CONDUIT_STORE_URL": f"sqlite:///{tmp_path / durability}.db",
                "CONDUIT_SQLITE_DECISION_DURABILITY": durability,
            }
        )
        store = build_store(config)
        assert isinstance(store, SqliteFeedbackStore)
        assert store.decision_durability == durability


@pytest.mark.parametrize("scheme", ["redis", "postgres"])
async def test_state_namespace_separates_the_feedback_stores_too(scheme: str) -> None:
    # Two sidecar groups on one Redis / PostgreSQL with different namespaces: before, only
    # the policy state was namespaced and both feedback stores shared "conduit", so pending
    # queries, signal counts and client-chosen session ids met across them.
    import uuid

    from conduit_sidecar.app import build_store
    from conduit_sidecar.query import RoutingDecision
    from conduit_sidecar.reward import RewardWeights
    from tests.conftest import POSTGRES_URL, REDIS_URL

    url = REDIS_URL if scheme == "redis" else POSTGRES_URL
    spaces = [f"ns_{uuid.uuid4().hex[:10]}", f"ns_{uuid.uuid4().hex[:10]}"]
    stores = [
        build_store(load_config(env={"CONDUIT_STORE_URL": url, "CONDUIT_STATE_NAMESPACE": ns}))
        for ns in spaces
    ]
    try:
        for store in stores:
            await store.initialize()
        decision = RoutingDecision(
            "q-1",
            "m",
            0.5,
            [0.0],
            {"m": 0.5},
            1.0,
            "",
            1,
            RewardWeights(0.6, 0.2, 0.2),
            session_id="s",
        )
        await stores[0].log_decision(decision, 60.0)
        assert await stores[0].pending_count() == 1
        assert await stores[1].pending_count() == 0
        assert await stores[1].get("q-1") is None
    finally:
        for store in stores:
            await store.close()
        await _drop_namespaces(scheme, spaces)


async def _drop_namespaces(scheme: str, spaces: list[str]) -> None:
    from tests.conftest import POSTGRES_URL, REDIS_URL

    if scheme == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL)
        try:
            for ns in spaces:
                keys = [k async for k in client.scan_iter(match=f"{ns}:*")]
                if keys:
                    await client.delete(*keys)
        finally:
            await client.aclose()
    else:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            for ns in spaces:
                await conn.execute(f"DROP SCHEMA IF EXISTS {ns} CASCADE")
        finally:
            await conn.close()


def test_a_misspelt_variable_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    # A typo in a manifest (CONDUIT_STORE_ULR) was ignored without a word; the variables
    # Kubernetes sets for a Service named conduit are not settings and stay quiet.
    env = {
        "CONDUIT_STORE_ULR": "redis://127.0.0.1:6390/0",
        "CONDUIT_SERVICE_HOST": "10.0.0.7",
        "CONDUIT_SERVICE_PORT": "50051",
        "CONDUIT_PORT_50051_TCP": "tcp://10.0.0.7:50051",
    }
    with caplog.at_level(logging.WARNING, logger="conduit_sidecar.config"):
        config = load_config(env=env)
    assert config.store_url == SidecarConfig().store_url
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "CONDUIT_STORE_ULR is not a setting and is ignored; did you mean CONDUIT_STORE_URL?"
    ]
