"""What a snapshot must agree on with the sidecar loading it, and what to tell the operator.

Statistics are only meaningful for the feature map and the policy family that produced them:
`A` and `b` of a 64-dimensional hashed feature space say nothing about a 32-dimensional one,
and a Beta posterior is not a LinUCB state. Such a snapshot is refused, loudly, with the way
out; it is never wiped. Settings that only change how the statistics are *used* (exploration
width, epsilon, seeds) may change freely between restarts.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from conduit_sidecar.bandit import FeatureHasher, PolicyConfig
from conduit_sidecar.errors import ConduitError

SNAPSHOT_FORMAT = 1
"""Version of the metadata written next to every base snapshot."""

_PROBE_TEXT = (
    "Conduit feature probe: Summarise THIS contract, then sort [3, 1, 2] in Python!\n"
    "```def f(x): return x``` 42 caf\u00e9 \u6f22\u5b57 why? because."
)


@functools.lru_cache(maxsize=8)
def feature_map_digest(dim: int) -> str:
    """A digest of the feature hasher's output for a fixed probe text (DESIGN section 3: the
    same text gives the same vector on every machine). Any change to the feature map, even
    one nobody remembered to version, changes it, so old statistics are refused instead of
    silently misread."""
    vector = FeatureHasher(dim).featurize(_PROBE_TEXT)
    return hashlib.sha256(vector.astype("<f8").tobytes()).hexdigest()[:16]


# Settings that shape the statistics themselves, with the flag that sets each.
_FLAGS = {
    "feature_dim": "--feature-dim",
    "policy": "--policy",
    "hasher": None,
    "ridge": None,
    "prior_alpha": None,
    "prior_beta": None,
    "discount": None,
}


class IncompatibleSnapshot(ConduitError):
    """A stored snapshot was written with other feature or policy settings; nothing was loaded."""

    def __init__(self, message: str, differences: dict[str, tuple[Any, Any]]) -> None:
        super().__init__(message)
        self.differences = differences


def fingerprint(config: PolicyConfig) -> dict[str, Any]:
    """The settings a snapshot's statistics depend on."""
    return {
        "policy": config.kind,
        "feature_dim": config.dim,
        "hasher": feature_map_digest(config.dim),
        "ridge": config.ridge,
        "prior_alpha": config.prior_alpha,
        "prior_beta": config.prior_beta,
        "discount": config.discount,
    }


def check_compatible(
    stored: dict[str, Any], current: dict[str, Any], *, where: str, reset_hint: str
) -> None:
    """Raises IncompatibleSnapshot if `stored` (a snapshot's fingerprint) differs from `current`."""
    differences = {
        key: (stored.get(key), value) for key, value in current.items() if stored.get(key) != value
    }
    if "feature_dim" in differences:
        differences.pop("hasher", None)  # another dimension always hashes differently
    if not differences:
        return
    written = ", ".join(f"{key}={old!r}" for key, (old, _) in differences.items())
    ours = ", ".join(f"{key}={new!r}" for key, (_, new) in differences.items())
    flags = [
        f"{flag} {old}"
        for key, (old, _) in differences.items()
        if (flag := _FLAGS.get(key)) is not None and old is not None
    ]
    if flags:
        keep = f"start this sidecar with the snapshot's settings ({' '.join(flags)})"
    elif "hasher" in differences:
        keep = (
            "run the Conduit version that wrote it (this version maps text to features "
            "differently, so the old statistics cannot be reused)"
        )
    else:
        keep = "start this sidecar with the snapshot's settings"
    raise IncompatibleSnapshot(
        f"the policy snapshot in {where} was written with {written}, but this sidecar uses "
        f"{ours}. Nothing was loaded and nothing was deleted. To keep what was learned, {keep}; "
        f"to start learning from scratch, point the sidecar at a fresh state namespace "
        f"or {reset_hint}.",
        differences,
    )
