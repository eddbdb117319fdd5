"""Conduit: an online-learning LLM router served as a gRPC sidecar.

`from conduit_sidecar import Router, Query` is the spec's entry point. Names are loaded on first
use so that importing a light module (errors, the proto layer) never loads the native core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from conduit_sidecar.errors import (
    ConduitError,
    InvalidArgument,
    NoEligibleModel,
    NotFound,
    Unauthenticated,
    Unavailable,
)

if TYPE_CHECKING:
    from conduit_sidecar.bandit import PolicyConfig
    from conduit_sidecar.model_stats import ModelStats
    from conduit_sidecar.models import ModelSpec, default_catalogue, load_catalogue
    from conduit_sidecar.query import Constraints, Query, RoutingDecision
    from conduit_sidecar.reward import PRESETS, RewardWeights, compose_reward
    from conduit_sidecar.router import Router

_LAZY = {
    "Router": "conduit_sidecar.router",
    "ModelStats": "conduit_sidecar.model_stats",
    "Query": "conduit_sidecar.query",
    "Constraints": "conduit_sidecar.query",
    "RoutingDecision": "conduit_sidecar.query",
    "RewardWeights": "conduit_sidecar.reward",
    "PRESETS": "conduit_sidecar.reward",
    "compose_reward": "conduit_sidecar.reward",
    "ModelSpec": "conduit_sidecar.models",
    "default_catalogue": "conduit_sidecar.models",
    "load_catalogue": "conduit_sidecar.models",
    "PolicyConfig": "conduit_sidecar.bandit",
}

__all__ = [
    "PRESETS",
    "ConduitError",
    "Constraints",
    "InvalidArgument",
    "ModelSpec",
    "ModelStats",
    "NoEligibleModel",
    "NotFound",
    "PolicyConfig",
    "Query",
    "RewardWeights",
    "Router",
    "RoutingDecision",
    "Unauthenticated",
    "Unavailable",
    "compose_reward",
    "default_catalogue",
    "load_catalogue",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conduit_sidecar' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
