"""Helpers shared by the tests of conduit_sidecar.bandit: a small NumPy reference
implementation of disjoint LinUCB, unit contexts and a three-arm policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from conduit_sidecar.bandit import (
    BanditPolicy,
    PolicyConfig,
    PolicyKind,
)

F64 = NDArray[np.float64]
ALL_KINDS: tuple[PolicyKind, ...] = (
    "linucb",
    "lin_ts",
    "beta_ts",
    "ucb1",
    "epsilon_greedy",
    "random",
    "fixed",
)


class ReferenceLinUCB:
    """Disjoint LinUCB the textbook way: A = ridge*I + sum w x x^T, b = sum w r x, theta
    solved from A directly (no Sherman-Morrison), so it shares no shortcut with the core."""

    def __init__(
        self,
        arms: Sequence[str],
        dim: int,
        alpha: float,
        ridge: float,
        offset: float = 0.0,
        discount: float = 1.0,
    ) -> None:
        self.alpha = alpha
        self.offset = offset  # prior mean of the reward: the model is r - offset
        # Each new observation of an arm first multiplies that arm's A (ridge included) and
        # b by `discount`; a re-application does not. (The core restores the ridge at its
        # exact re-factorisations, which the tests using a discount keep out of reach.)
        self.discount = discount
        self.A = {a: ridge * np.eye(dim) for a in arms}
        self.b = {a: np.zeros(dim) for a in arms}

    def update(self, arm: str, x: F64, reward: float, weight: float) -> None:
        self.A[arm] *= self.discount
        self.b[arm] *= self.discount
        self.A[arm] += weight * np.outer(x, x)
        self.b[arm] += weight * (reward - self.offset) * x

    def reapply(self, arm: str, x: F64, r0: float, w0: float, r1: float, w1: float) -> None:
        self.A[arm] += (w1 - w0) * np.outer(x, x)
        self.b[arm] += (w1 * (r1 - self.offset) - w0 * (r0 - self.offset)) * x

    def theta(self, arm: str) -> F64:
        theta: F64 = np.asarray(np.linalg.solve(self.A[arm], self.b[arm]), dtype=np.float64)
        return theta

    def scores(self, x: F64, arms: Sequence[str]) -> dict[str, float]:
        out = {}
        for a in arms:
            width = float(np.sqrt(x @ np.linalg.solve(self.A[a], x)))
            out[a] = self.offset + float(self.theta(a) @ x) + self.alpha * width
        return out

    def width(self, x: F64, arm: str) -> float:
        """sqrt(x^T A^-1 x): the LinUCB width and the linear-TS score's sd over ts_scale."""
        return float(np.sqrt(x @ np.linalg.solve(self.A[arm], x)))

    def best(self, x: F64, arms: Sequence[str]) -> list[str]:
        """Every arm with the highest score (ties to 1e-12: untried arms tie exactly)."""
        scores = self.scores(x, arms)
        top = max(scores.values())
        return [a for a in arms if scores[a] >= top - 1e-12 * max(1.0, abs(top))]


def unit(rng: np.random.Generator, dim: int) -> F64:
    x = rng.normal(size=dim)
    x[0] = 1.0  # bias term
    out: F64 = x / np.linalg.norm(x)
    return out


def make(kind: PolicyKind = "linucb", dim: int = 6, **kw: Any) -> BanditPolicy:
    arms = ["a", "b", "c"]
    if kind == "fixed":
        kw.setdefault("fixed_arm", "b")
    return BanditPolicy(PolicyConfig(kind=kind, dim=dim, **kw), arms)
