"""Typed wrapper over the Rust core; the only module that imports ``conduit_sidecar._core``.

Everything above this layer uses these names (docs/ARCHITECTURE.md, layer 1). The native
policy is thread-safe and releases the GIL around the math, except for calls so small (a few
microseconds: select at d=64 with up to 16 arms, update up to d=128) that handing the
interpreter to another thread would cost more; this module only converts types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast, get_args

import numpy as np
from numpy.typing import NDArray

from conduit_sidecar import _core
from conduit_sidecar._core import CoreError

__all__ = [
    "ArmStats",
    "BanditPolicy",
    "CoreError",
    "FeatureHasher",
    "Features",
    "PolicyConfig",
    "PolicyKind",
    "Routed",
    "Selection",
]

# Features: a 1-D float64 array (the fast path) or any sequence of numbers.
Features = NDArray[np.float64] | Sequence[float]

PolicyKind = Literal["linucb", "lin_ts", "beta_ts", "ucb1", "epsilon_greedy", "random", "fixed"]
_KINDS: frozenset[str] = frozenset(get_args(PolicyKind))


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Every tunable of every policy; each policy reads the ones it needs."""

    kind: PolicyKind = "linucb"
    dim: int = 64  # feature dimension d (bias term included)
    alpha: float = 1.0  # LinUCB width multiplier / UCB1 exploration constant
    ridge: float = 1.0  # lambda in A = lambda*I + sum w x x^T
    epsilon: float = 0.1  # epsilon-greedy
    ts_scale: float = 0.5  # v in theta ~ N(theta_hat, v^2 A^-1)
    prior_alpha: float = 1.0  # Beta Thompson prior
    prior_beta: float = 1.0
    # Exponential forgetting per new observation, 1.0 = none: scalar policies decay every arm,
    # linear ones the observed arm only (docs/ARCHITECTURE.md, layer 1).
    discount: float = 1.0
    refactor_every: int = 1000  # exact re-factorisation period (updates per arm)
    mc_samples: int = 200  # Monte-Carlo draws for Thompson propensities
    seed: int = 0
    fixed_arm: str | None = None  # for kind="fixed"
    # Linear policies: prior mean of the reward. They model r - reward_offset and score
    # reward_offset + theta.x (+ width), so an untried arm is expected to earn the offset
    # instead of 0; theta() is the coefficient vector of the centred reward. 0 = textbook.
    reward_offset: float = 0.0


@dataclass(frozen=True, slots=True)
class Selection:
    """What ``BanditPolicy.select`` decided."""

    arm: str
    scores: dict[str, float]  # score of every candidate arm (the ones allowed)
    propensity: float  # P(policy picks `arm` | x, allowed), in (0, 1]
    uncertainty: float  # posterior width of the chosen arm (>= 0)


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Per-arm totals: confidence-weighted sums and the number of observations."""

    weight_sum: float
    reward_sum: float
    updates: int


_F64 = np.dtype(np.float64)


def _features(features: object) -> NDArray[np.float64]:
    """Features as a 1-D float64 array, or CoreError naming the field."""
    # Fast path first: this runs on every select/update, so it avoids isinstance chains.
    if type(features) is np.ndarray and features.dtype is _F64 and features.ndim == 1:
        return cast("NDArray[np.float64]", features)
    try:
        arr = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CoreError(f"features: not a sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise CoreError(f"features: must be one-dimensional, got shape {arr.shape}")
    return arr


def _arm_name(arm: object, field: str = "arm") -> str:
    if type(arm) is not str and not isinstance(arm, str):
        raise CoreError(f"{field}: must be a string, got {type(arm).__name__}")
    return arm


def _arm_names(arms: object, field: str) -> list[str]:
    if isinstance(arms, str | bytes) or not isinstance(arms, Sequence):
        raise CoreError(f"{field}: must be a sequence of arm names")
    return [_arm_name(a, field) for a in arms]


def _not_utf8(exc: UnicodeEncodeError, **fields: object) -> CoreError:
    """The CoreError for a str UTF-8 cannot encode (a lone surrogate), which the native call
    refused with a UnicodeEncodeError naming nothing: names the first field holding one.
    Runs only after the failure, so the calls' fast paths pay nothing for it."""
    for field, value in fields.items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode()
                except UnicodeEncodeError as bad:
                    return CoreError(f"{field}: not valid Unicode text ({bad.reason})")
    return CoreError(f"text: not valid Unicode text ({exc.reason})")


def _number(value: object, field: str) -> float:
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise CoreError(f"{field}: must be a number, got {type(value).__name__}")
    return float(value)


# BanditPolicy.route: (arm, scores, propensity, uncertainty, runner_up, margin, features,
# version). runner_up is the first best-scored other candidate (None if there is none) and
# margin the chosen arm's score minus its score (+inf without one).
Routed = tuple[str, dict[str, float], float, float, str | None, float, list[float], int]


class BanditPolicy:
    """A contextual-bandit policy over named arms (thread-safe; the GIL is released around
    all but the smallest calls)."""

    __slots__ = ("_config", "_policy")

    def __init__(self, config: PolicyConfig, arms: Sequence[str]) -> None:
        if not isinstance(config, PolicyConfig):
            raise CoreError("config: must be a PolicyConfig")
        if config.kind not in _KINDS:
            raise CoreError(f"kind: unknown policy kind {config.kind!r}")
        kwargs = asdict(config)
        kind = kwargs.pop("kind")
        dim = kwargs.pop("dim")
        for name in ("dim", "refactor_every", "mc_samples", "seed"):
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise CoreError(f"{name}: must be an integer")
        if config.seed < 0 or config.seed >= 2**64:
            raise CoreError("seed: must be in [0, 2**64)")
        for name in (
            "alpha",
            "ridge",
            "epsilon",
            "ts_scale",
            "prior_alpha",
            "prior_beta",
            "discount",
            "reward_offset",
        ):
            kwargs[name] = _number(kwargs[name], name)
        names = _arm_names(arms, "arms")
        try:
            self._policy = _core.Policy(kind, dim, names, **kwargs)
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, arms=names, fixed_arm=config.fixed_arm) from None
        self._config = config

    @classmethod
    def _wrap(cls, policy: _core.Policy) -> BanditPolicy:
        self = cls.__new__(cls)
        self._policy = policy
        raw: dict[str, Any] = policy.config()
        self._config = PolicyConfig(**raw)
        return self

    @property
    def config(self) -> PolicyConfig:
        return self._config

    @property
    def arms(self) -> list[str]:
        return self._policy.arms

    @property
    def version(self) -> int:
        """Increases on every state change (update, reapply, merge, arm change)."""
        return self._policy.version

    @property
    def local_version(self) -> int:
        """`version` without the steps of merged deltas: changes only with this process's own
        changes (update, reapply, arm change), so a caller can tell whether `take_delta` has
        anything new without taking it."""
        return self._policy.local_version

    def select(self, features: Features, allowed: Sequence[str] | None = None) -> Selection:
        names = None if allowed is None else _arm_names(allowed, "allowed")
        try:
            try:
                # Fast path: the native call accepts a 1-D float64 array and nothing else. It
                # fills Selection's slots directly: the frozen dataclass __init__ costs as much
                # as the math.
                return self._policy.select(Selection, features, names)  # type: ignore[arg-type]
            except TypeError:
                return self._policy.select(Selection, _features(features), names)
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, allowed=names) from None

    def route(
        self, hasher: FeatureHasher, text: str, allowed: Sequence[str] | None = None
    ) -> Routed:
        """`hasher.featurize(text)` then `select` in one native call (the Router's hot path):
        what `select` says plus the runner-up, the score margin over it, the features as a
        list and the policy version (see `Routed`)."""
        if not isinstance(text, str):
            raise CoreError(f"text: must be a string, got {type(text).__name__}")
        names = None if allowed is None else _arm_names(allowed, "allowed")
        # A str UTF-8 cannot encode raises UnicodeEncodeError here, unlike the other methods:
        # Router.decide catches exactly that on its hot path and names the field itself.
        return self._policy.route(hasher._hasher, text, names)

    def update(self, arm: str, features: Features, reward: float, weight: float = 1.0) -> None:
        try:
            try:
                # Fast path: the native call takes a str arm, a 1-D float64 array and exact
                # float reward and weight, and raises TypeError (before touching anything)
                # otherwise.
                self._policy.update(arm, features, reward, weight)  # type: ignore[arg-type]
            except TypeError:
                self._policy.update(
                    _arm_name(arm),
                    _features(features),
                    _number(reward, "reward"),
                    _number(weight, "weight"),
                )
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, arm=arm) from None

    def reapply(
        self,
        arm: str,
        features: Features,
        old_reward: float,
        old_weight: float,
        new_reward: float,
        new_weight: float,
    ) -> None:
        """Replace an observation's (reward, weight) by the net delta (DESIGN section 2)."""
        try:
            self._policy.reapply(
                _arm_name(arm),
                _features(features),
                _number(old_reward, "old_reward"),
                _number(old_weight, "old_weight"),
                _number(new_reward, "new_reward"),
                _number(new_weight, "new_weight"),
            )
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, arm=arm) from None

    def add_arm(self, arm: str) -> None:
        try:
            self._policy.add_arm(_arm_name(arm))
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, arm=arm) from None

    def remove_arm(self, arm: str) -> None:
        try:
            self._policy.remove_arm(_arm_name(arm))
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, arm=arm) from None

    def to_bytes(self) -> bytes:
        return self._policy.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, dim: int | None = None) -> BanditPolicy:
        """Load a snapshot; with ``dim``, refuse one of another feature dimension."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CoreError("snapshot: must be bytes")
        policy = cls._wrap(_core.Policy.from_bytes(bytes(data)))
        if dim is not None and policy.config.dim != dim:
            raise CoreError(
                f"snapshot: feature dimension {policy.config.dim} does not match the expected {dim}"
            )
        return policy

    def take_delta(self) -> bytes:
        """Additive statistics applied locally since the last call, then reset."""
        return self._policy.take_delta()

    def merge_delta(self, delta: bytes, *, skip_unknown: bool = False) -> list[str]:
        """Add another replica's delta (it is not re-exported by ``take_delta``).

        Arms the delta has and this policy does not are added fresh, or with
        ``skip_unknown`` left out (their statistics are not merged); returns the names left
        out. The exact re-factorisation (O(d^3) per touched linear arm) runs without holding
        the policy and with the GIL released, so other threads keep selecting and updating;
        call it from a worker thread to keep an event loop answering meanwhile."""
        if not isinstance(delta, bytes | bytearray | memoryview):
            raise CoreError("delta: must be bytes")
        return self._policy.merge_delta(bytes(delta), skip_unknown=bool(skip_unknown))

    def arm_stats(self) -> dict[str, ArmStats]:
        return {name: ArmStats(w, r, n) for name, (w, r, n) in self._policy.arm_stats()}

    def theta(self, arm: str) -> NDArray[np.float64] | None:
        """The cached coefficient vector of a linear arm; None for non-linear policies."""
        try:
            return self._policy.theta(_arm_name(arm))
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, arm=arm) from None


class FeatureHasher:
    """Deterministic text features: the same vector on every machine and in every process."""

    __slots__ = ("_hasher",)

    def __init__(self, dim: int = 64) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise CoreError("dim: must be an integer")
        self._hasher = _core.FeatureHasher(dim)

    @property
    def dim(self) -> int:
        return self._hasher.dim

    def featurize(self, text: str) -> NDArray[np.float64]:
        if not isinstance(text, str):
            raise CoreError(f"text: must be a string, got {type(text).__name__}")
        try:
            return self._hasher.featurize(text)
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, text=text) from None
