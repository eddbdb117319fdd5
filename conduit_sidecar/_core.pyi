"""Type stub of the native module built from conduit_core/src/py (checked by mypy.stubtest)."""

from collections.abc import Sequence
from typing import TypeVar, final

import numpy as np
from numpy.typing import NDArray

__all__ = ["CoreError", "FeatureHasher", "Policy"]

_T = TypeVar("_T")

class CoreError(ValueError):
    """An input the Conduit core refused; the message names the field."""

@final
class Policy:
    def __new__(
        cls,
        kind: str,
        dim: int,
        arms: Sequence[str],
        *,
        alpha: float = 1.0,
        ridge: float = 1.0,
        epsilon: float = 0.1,
        ts_scale: float = 0.5,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        discount: float = 1.0,
        refactor_every: int = 1000,
        mc_samples: int = 200,
        seed: int = 0,
        fixed_arm: str | None = None,
        reward_offset: float = 0.0,
    ) -> Policy: ...
    # An instance of `cls` (a plain class deriving only from object) whose fields arm,
    # scores, propensity and uncertainty are set directly, without calling __init__.
    def select(
        self, cls: type[_T], features: NDArray[np.float64], allowed: Sequence[str] | None = None
    ) -> _T: ...
    # Featurise text and select in one call: (arm, scores, propensity, uncertainty,
    # runner_up, margin, features, version); runner_up None and margin inf without one.
    def route(
        self, hasher: FeatureHasher, text: str, allowed: Sequence[str] | None = None
    ) -> tuple[str, dict[str, float], float, float, str | None, float, list[float], int]: ...
    # reward and weight must be exact floats (an int, a bool or a NumPy scalar is a TypeError).
    def update(
        self, arm: str, features: NDArray[np.float64], reward: float, weight: float
    ) -> None: ...
    def reapply(
        self,
        arm: str,
        features: NDArray[np.float64],
        old_reward: float,
        old_weight: float,
        new_reward: float,
        new_weight: float,
    ) -> None: ...
    def add_arm(self, arm: str) -> None: ...
    def remove_arm(self, arm: str) -> None: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Policy: ...
    def take_delta(self) -> bytes: ...
    def merge_delta(self, delta: bytes, *, skip_unknown: bool = False) -> list[str]: ...
    def arm_stats(self) -> list[tuple[str, tuple[float, float, int]]]: ...
    def theta(self, arm: str) -> NDArray[np.float64] | None: ...
    @property
    def arms(self) -> list[str]: ...
    @property
    def version(self) -> int: ...
    @property
    def local_version(self) -> int: ...
    def config(self) -> dict[str, object]: ...

@final
class FeatureHasher:
    def __new__(cls, dim: int = 64) -> FeatureHasher: ...
    @property
    def dim(self) -> int: ...
    def featurize(self, text: str) -> NDArray[np.float64]: ...
