"""Sidecar configuration: defaults < YAML file < CONDUIT_* environment < command-line flags.

Every setting has one name used everywhere: the YAML key `feature_dim`, the environment
variable `CONDUIT_FEATURE_DIM` and the flag `--feature-dim`. Values are validated once, here,
and a bad one raises `ConfigError` naming the setting and where it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .feedback.stores.base import MAX_TTL_SECONDS

_log = logging.getLogger(__name__)

STORE_SCHEMES = ("memory", "sqlite", "redis", "rediss", "postgresql", "postgres")
POLICIES = ("linucb", "lin_ts", "beta_ts", "ucb1", "epsilon_greedy", "random", "fixed")
PREFERENCES = ("balanced", "quality", "cost", "speed")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# grpc's channel arguments are C ints.
MAX_MESSAGE_BYTES = 2**31 - 1
# The limit applies to responses too: below a few KiB a ListModels or a Route with its
# features could not be sent (RESOURCE_EXHAUSTED after the decision was made and logged, and
# an error traceback in the log per call). 64 KiB leaves room for any catalogue in use.
MIN_MESSAGE_BYTES = 64 * 1024
# The longest pending window, for the server default and each request's ttl_s: the stores'
# own bound (ten years), so the server refuses up front what a store would refuse later.
MAX_TTL_S = MAX_TTL_SECONDS


class ConfigError(ValueError):
    """An unusable setting; the message names it and its source."""


def default_store_url() -> str:
    """SQLite under $XDG_STATE_HOME (the embedded, durable default; no server needed)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return f"sqlite:///{Path(state) / 'conduit' / 'conduit.db'}"


@dataclass(frozen=True)
class SidecarConfig:
    """Everything `conduit-sidecar serve` needs; see docs/SIDECAR.md for each setting."""

    listen: str = "127.0.0.1:50051"
    catalogue: str | None = None  # JSON/YAML model catalogue; None = the bundled default
    policy: str = "linucb"
    feature_dim: int = 64
    preference: str = "balanced"  # default reward preset for decisions that give none
    seed: int = 0
    store_url: str = field(default_factory=default_store_url)
    # SQLite durability: FULL fsyncs every commit (survives power loss); NORMAL (WAL) survives
    # process crashes and SIGKILL but may lose the last commits on an OS crash; faster.
    sqlite_synchronous: str = "FULL"
    # Route's decision log on SQLite: "buffered" answers before the group commit (a crash may
    # lose the last ~5 ms of decisions); "commit" waits for it. Track and feedback always wait.
    sqlite_decision_durability: str = "buffered"
    ttl_s: float = 3600.0  # how long a routed query stays pending for feedback
    max_pending: int = 100_000  # bound of the in-memory store (memory:// only)
    token: str | None = None  # bearer token; None = no authentication
    tls_cert: str | None = None
    tls_key: str | None = None
    max_message_bytes: int = 4 * 1024 * 1024
    max_text_chars: int = 100_000
    grace_s: float = 10.0  # SIGTERM: how long in-flight calls may take to finish
    metrics_port: int | None = None  # Prometheus HTTP port; None = no metrics endpoint
    metrics_host: str = "127.0.0.1"
    json_logs: bool = False
    # Policy state (docs/OPERATIONS.md, "Scale-out and survival"): deltas are published and
    # merged every sync_interval_s (0 = after every observation: zero loss window with a
    # shared store); a snapshot is compacted every snapshot_interval_s; state_namespace
    # prefixes the Redis keys / names the SQL tables and schema of both the policy state and
    # the feedback store, so several router groups can share one server (on SQLite only the
    # policy state's tables: the feedback tables of one file are not namespaced).
    sync_interval_s: float = 1.0
    snapshot_interval_s: float = 60.0
    state_namespace: str = "conduit"
    log_level: str = "INFO"

    def validate(self) -> SidecarConfig:
        """Returns self, or raises ConfigError naming the first bad setting."""
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"listen: expected host:port, got {self.listen!r}")
        if self.policy not in POLICIES:
            raise ConfigError(f"policy: expected one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.preference not in PREFERENCES:
            raise ConfigError(
                f"preference: expected one of {', '.join(PREFERENCES)}, got {self.preference!r}"
            )
        scheme = self.store_url.split("://", 1)[0] if "://" in self.store_url else ""
        if scheme not in STORE_SCHEMES:
            raise ConfigError(
                "store_url: expected memory://, sqlite:///path, redis://... or "
                f"postgresql://..., got {self.store_url!r}"
            )
        if scheme == "sqlite" and not self.store_url[len("sqlite:///") :]:
            raise ConfigError("store_url: sqlite:/// needs a path, e.g. sqlite:///./conduit.db")
        if scheme in ("redis", "rediss"):
            # redis-py reads a database that is not a number as database 0: a typo would
            # silently share another deployment's keys.
            db = urlsplit(self.store_url).path.strip("/")
            if db and not db.isdigit():
                raise ConfigError(
                    f"store_url: the Redis database after the host must be a number, got {db!r}"
                )
        if self.sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(
                f"sqlite_synchronous: expected FULL or NORMAL, got {self.sqlite_synchronous!r}"
            )
        if self.sqlite_decision_durability not in ("buffered", "commit"):
            raise ConfigError(
                "sqlite_decision_durability: expected buffered or commit, "
                f"got {self.sqlite_decision_durability!r}"
            )
        positive_ints = ("feature_dim", "max_pending", "max_message_bytes", "max_text_chars")
        for name in positive_ints:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        from .query import MAX_TEXT_CHARS  # here: config stays importable without the domain

        if self.max_text_chars > MAX_TEXT_CHARS:
            # The Router refuses longer texts whatever the sidecar's own limit says.
            raise ConfigError(
                f"max_text_chars: must be at most {MAX_TEXT_CHARS}, got {self.max_text_chars}"
            )
        if not MIN_MESSAGE_BYTES <= self.max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ConfigError(
                f"max_message_bytes: must be between {MIN_MESSAGE_BYTES} and "
                f"{MAX_MESSAGE_BYTES}, got {self.max_message_bytes}"
            )
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level: expected one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if not math.isfinite(self.sync_interval_s) or self.sync_interval_s < 0:
            raise ConfigError(
                f"sync_interval_s: must be finite and >= 0, got {self.sync_interval_s}"
            )
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", self.state_namespace):
            raise ConfigError(
                "state_namespace: expected lower-case letters, digits and _ (at most 41), "
                f"got {self.state_namespace!r}"
            )
        for name in ("ttl_s", "grace_s", "snapshot_interval_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name}: must be finite and > 0, got {value}")
        if self.ttl_s > MAX_TTL_S:
            raise ConfigError(
                f"ttl_s: must be at most {MAX_TTL_S:.0f} (ten years), got {self.ttl_s}"
            )
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port: must be a TCP port, got {self.metrics_port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert/tls_key: set both or neither")
        for name in ("catalogue", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                what = "not a regular file" if Path(path).exists() else "no such file"
                raise ConfigError(f"{name}: {what} {path!r}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token: must not be blank")
        if self.token is not None and not (
            self.token.isascii() and self.token.strip().isprintable()
        ):
            # It travels as an HTTP/2 header value, which clients refuse to send otherwise
            # (surrounding whitespace, e.g. a file's final newline, is stripped).
            raise ConfigError("token: must be printable ASCII (it is sent in a header)")
        return self

    @property
    def store_scheme(self) -> str:
        return self.store_url.split("://", 1)[0]


_FIELDS = {f.name: f for f in dataclasses.fields(SidecarConfig)}


def env_name(name: str) -> str:
    return "CONDUIT_" + name.upper()


def _kind(name: str) -> type:
    """The scalar type of a setting (int/float/bool/str), ignoring `| None`."""
    annotation = str(_FIELDS[name].type)
    for kind in (bool, int, float):
        if annotation.startswith(kind.__name__):
            return kind
    return str


def _optional(name: str) -> bool:
    return str(_FIELDS[name].type).endswith("| None")


def _coerce(name: str, raw: Any, source: str) -> Any:
    """Converts a YAML/env/flag value to the setting's type; errors name the setting."""
    # An empty value unsets an optional setting (CONDUIT_METRICS_PORT=""), except the token:
    # a blank secret must not silently turn authentication off.
    blank = isinstance(raw, str) and raw.strip() == "" and name != "token"
    if raw is None or (blank and _optional(name)):
        if _optional(name):
            return None
        raise ConfigError(f"{name} ({source}): must be set")
    kind = _kind(name)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if kind is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} ({source}): expected {kind.__name__}, got {raw!r}") from None
    if not isinstance(raw, str):
        # YAML reads `token: 0123` as the number 83 and `on` as True: str() of that is not
        # what the operator wrote.
        raise ConfigError(f"{name} ({source}): expected a string (quote it), got {raw!r}")
    return raw


def yaml_problem(exc: yaml.YAMLError) -> str:
    """': <problem> at line L, column C', on one line. str() of a YAML error spans four
    lines (context, problem, a quoted source line and a caret), and an error at start-up is
    one line of the log."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f": {problem}{where}"


def load_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path!r} is not valid YAML{yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:  # raised by the file's read, not by the YAML reader
        raise ConfigError(f"config: {path!r} is not UTF-8 text: {exc.reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path!r} must hold a mapping of settings")
    unknown = sorted(set(data) - _FIELDS.keys())
    if unknown:
        raise ConfigError(f"config: unknown setting(s) {', '.join(unknown)} in {path!r}")
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--config` and one flag per setting (all default to None = not given)."""
    parser.add_argument("--config", help="YAML file of settings (env: CONDUIT_CONFIG)")
    for name in _FIELDS:
        flag = "--" + name.replace("_", "-")
        if _kind(name) is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, default=None, help=f"env: {env_name(name)}")


# The variables Kubernetes sets for a Service (here one whose name starts with "conduit").
_SERVICE_LINK = re.compile(r"CONDUIT\w*_(SERVICE_HOST|SERVICE_PORT\w*|PORT|PORT_\d+_\w+)")


def _warn_misspelt(env: Mapping[str, str]) -> None:
    """Warns about a CONDUIT_* variable that is no setting but nearly spells one: a typo in a
    manifest is otherwise silently ignored. Only near misses: other CONDUIT_* names are
    common (Kubernetes adds CONDUIT_SERVICE_HOST, CONDUIT_PORT... for a Service named
    conduit)."""
    known = [env_name(name) for name in _FIELDS] + ["CONDUIT_CONFIG"]
    for variable in env:
        if (
            variable.startswith("CONDUIT_")
            and variable not in known
            and not _SERVICE_LINK.fullmatch(variable)
        ):
            close = difflib.get_close_matches(variable, known, n=1, cutoff=0.85)
            if close:
                _log.warning(
                    "%s is not a setting and is ignored; did you mean %s?", variable, close[0]
                )


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> SidecarConfig:
    """Merges the sources in precedence order and validates the result."""
    env = os.environ if env is None else env
    flags = flags or {}
    path = config_path or flags.get("config") or env.get("CONDUIT_CONFIG")
    values: dict[str, Any] = {}
    if path:
        for name, raw in load_yaml(str(path)).items():
            values[name] = _coerce(name, raw, f"config file {path}")
    for name in _FIELDS:
        if env_name(name) in env:
            values[name] = _coerce(name, env[env_name(name)], env_name(name))
    _warn_misspelt(env)
    for name in _FIELDS:
        if flags.get(name) is not None:
            values[name] = _coerce(name, flags[name], "--" + name.replace("_", "-"))
    return SidecarConfig(**values).validate()


def config_from_args(argv: Sequence[str]) -> SidecarConfig:
    """Parses serve-style flags (used by tests and `python -m conduit_sidecar`)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_config(vars(parser.parse_args(list(argv))))
