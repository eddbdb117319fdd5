"""Thin wrappers that give every contender the same select/update shape.

The contenders are used through their public APIs only: Conduit through
``conduit_sidecar.bandit`` (layer 1 of docs/ARCHITECTURE.md), MABWiser through ``MAB`` with
``LearningPolicy.LinUCB``, and Vowpal Wabbit through ``vowpalwabbit.Workspace`` with
``--cb_explore_adf`` and its text format. Arms are indices ``0..K-1`` here; each wrapper maps
them to the contender's own arm names.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from conduit_sidecar.bandit import PolicyKind

__all__ = [
    "VW_ARGS",
    "ConduitArms",
    "MabwiserLinUCB",
    "VowpalCB",
    "arm_names",
    "conduit_available",
]

# Shared context in namespace S, one action feature in namespace A, and the S x A interaction
# so that VW learns one linear model per arm on the context (what disjoint LinUCB learns).
# Exploration is VW's default for --cb_explore_adf (epsilon-greedy, epsilon = 0.05).
VW_ARGS = "--cb_explore_adf -q SA --quiet"


def arm_names(n_arms: int) -> list[str]:
    return [f"m{k}" for k in range(n_arms)]


def conduit_available() -> str | None:
    """None when the Conduit core imports, else the reason it does not."""
    try:
        from conduit_sidecar.bandit import BanditPolicy, PolicyConfig  # noqa: F401
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class ConduitArms:
    """Conduit's ``BanditPolicy`` plus the arm-name <-> index maps the harness needs."""

    def __init__(
        self,
        kind: PolicyKind,
        dim: int,
        n_arms: int,
        alpha: float = 1.0,
        ridge: float = 1.0,
        seed: int = 0,
        **config: Any,
    ) -> None:
        from conduit_sidecar.bandit import BanditPolicy, PolicyConfig

        self.names = arm_names(n_arms)
        self.index = {name: k for k, name in enumerate(self.names)}
        cfg = PolicyConfig(kind=kind, dim=dim, alpha=alpha, ridge=ridge, seed=seed, **config)
        self.policy = BanditPolicy(cfg, self.names)

    def select(self, x: NDArray[np.float64]) -> int:
        return self.index[self.policy.select(x).arm]

    def update(self, arm: int, x: NDArray[np.float64], reward: float) -> None:
        self.policy.update(self.names[arm], x, reward)


class MabwiserLinUCB:
    """MABWiser's LinUCB (``MAB`` + ``LearningPolicy.LinUCB``), one context per call."""

    def __init__(
        self,
        n_arms: int,
        alpha: float,
        ridge: float,
        seed: int,
        prime_arms: Sequence[int],
        prime_rewards: Sequence[float],
        prime_contexts: NDArray[np.float64],
    ) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.names = arm_names(n_arms)
        self.index = {name: k for k, name in enumerate(self.names)}
        self.mab = MAB(
            arms=list(self.names),
            learning_policy=LearningPolicy.LinUCB(alpha=alpha, l2_lambda=ridge),
            seed=seed,
        )
        # MABWiser needs one batch fit before predict; it is also how it is meant to start.
        self.mab.fit([self.names[a] for a in prime_arms], list(prime_rewards), prime_contexts)

    def select(self, x2d: NDArray[np.float64]) -> int:
        """``x2d`` is the context as a ``(1, d)`` array, MABWiser's input shape."""
        return self.index[self.mab.predict(x2d)]

    def update(self, arm: int, x2d: NDArray[np.float64], reward: float) -> None:
        self.mab.partial_fit([self.names[arm]], [reward], x2d)


class VowpalCB:
    """Vowpal Wabbit contextual bandit with action-dependent features, text input."""

    def __init__(self, n_arms: int, seed: int, args: str = VW_ARGS) -> None:
        from vowpalwabbit import Workspace

        self.n_arms = n_arms
        self.args = f"{args} --random_seed {seed}"
        self.vw = Workspace(self.args)
        self.actions = [f"|A a{k}" for k in range(n_arms)]

    @staticmethod
    def shared_line(x: NDArray[np.float64]) -> str:
        return "shared |S " + " ".join(f"{j}:{v:.9g}" for j, v in enumerate(x.tolist()))

    def example(self, shared: str) -> list[str]:
        return [shared, *self.actions]

    def labelled(self, shared: str, arm: int, reward: float, prob: float) -> list[str]:
        lines = [shared, *self.actions]
        # VW minimises cost, so the cost is the negated reward.
        lines[1 + arm] = f"{arm}:{-reward:.9g}:{prob:.9g} {self.actions[arm]}"
        return lines

    def pmf(self, shared: str) -> list[float]:
        out: list[float] = self.vw.predict(self.example(shared))
        return out

    @staticmethod
    def sample(pmf: Sequence[float], u: float) -> int:
        """Draw an arm from ``pmf`` with the uniform ``u`` in [0, 1)."""
        cdf = list(accumulate(pmf))
        return min(bisect.bisect_right(cdf, u * cdf[-1]), len(cdf) - 1)

    def learn(self, lines: list[str]) -> None:
        self.vw.learn(lines)

    def close(self) -> None:
        self.vw.finish()
