"""The model catalogue: ids, prices, expected latency; and the per-call cost estimate.

The bundled catalogue (`conduit_sidecar/data/models.json`) makes `Router()` work offline;
`load_catalogue(path)` reads an edited copy (JSON, or YAML by file suffix).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.reward import as_number

# Cost estimate for `Constraints.max_cost_usd`, made before the call so it can only use the
# query text: input tokens ~ characters / 4 (the usual rule of thumb for English with BPE
# tokenizers), output tokens a fixed typical answer length.
CHARS_PER_TOKEN = 4
EXPECTED_OUTPUT_TOKENS = 256

# Spec used for an id missing from the catalogue: no price known (counts as free for
# max_cost_usd), a middling latency and quality. Pass a ModelSpec to say more.
NEUTRAL_LATENCY_S = 2.0
NEUTRAL_QUALITY_PRIOR = 0.5

# The core's limit on an arm name (conduit_core/src/bandit.rs). Checked here too so that a
# catalogue entry beyond it is refused naming the model id, not the policy it is given to.
MAX_MODEL_ID_BYTES = 1024


@dataclass(frozen=True)
class ModelSpec:
    """One routable model. Prices are USD per million tokens."""

    id: str
    provider: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    expected_latency_s: float
    quality_prior: float

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise InvalidArgument("model.id", f"must be a non-empty string, got {self.id!r}")
        if "\x00" in self.id:
            # PostgreSQL text and jsonb cannot hold NUL: the policy snapshot's metadata (which
            # lists the models) failed to save there, so compaction never succeeded.
            raise InvalidArgument("model.id", "must not contain NUL characters")
        try:
            id_bytes = len(self.id.encode())
        except UnicodeEncodeError as exc:  # a lone surrogate (JSON "\udcff" reads as one)
            raise InvalidArgument(
                "model.id", f"not valid Unicode ({exc.reason} at position {exc.start})"
            ) from None
        if id_bytes > MAX_MODEL_ID_BYTES:
            raise InvalidArgument(
                "model.id", f"too long: {id_bytes} bytes in UTF-8, limit {MAX_MODEL_ID_BYTES}"
            )
        if not isinstance(self.provider, str):
            raise InvalidArgument(f"{self.id}.provider", "must be a string")
        for name in ("input_usd_per_mtok", "output_usd_per_mtok", "expected_latency_s"):
            value = as_number(f"{self.id}.{name}", getattr(self, name))
            if not math.isfinite(value) or value < 0.0:
                raise InvalidArgument(f"{self.id}.{name}", f"must be finite and >= 0, got {value}")
            object.__setattr__(self, name, value)
        prior = as_number(f"{self.id}.quality_prior", self.quality_prior)
        if not 0.0 <= prior <= 1.0:
            raise InvalidArgument(f"{self.id}.quality_prior", f"must be in [0, 1], got {prior}")
        object.__setattr__(self, "quality_prior", prior)

    @classmethod
    def neutral(cls, model_id: str) -> ModelSpec:
        """The spec of a model the catalogue does not know (see NEUTRAL_* above)."""
        return cls(
            id=model_id,
            provider="unknown",
            input_usd_per_mtok=0.0,
            output_usd_per_mtok=0.0,
            expected_latency_s=NEUTRAL_LATENCY_S,
            quality_prior=NEUTRAL_QUALITY_PRIOR,
        )

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1e6


def estimate_input_tokens(text: str) -> int:
    """Tokens in `text`, estimated as ceil(characters / CHARS_PER_TOKEN)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_cost_usd(spec: ModelSpec, text: str) -> float:
    """Expected cost of sending `text` to `spec` and getting a typical-length answer."""
    return spec.cost_usd(estimate_input_tokens(text), EXPECTED_OUTPUT_TOKENS)


_FIELDS = tuple(f.name for f in fields(ModelSpec))


def _parse(document: Any, source: str) -> list[ModelSpec]:
    entries = document.get("models") if isinstance(document, Mapping) else document
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(
            "models", f"{source}: expected a non-empty list of models (or {{'models': [...]}})"
        )
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"models[{index}]"
        if not isinstance(entry, Mapping):
            raise InvalidArgument(where, f"{source}: expected a mapping, got {entry!r}")
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise InvalidArgument(f"{where}.{unknown[0]}", f"{source}: unknown key")
        missing = [name for name in _FIELDS if name not in entry]
        if missing:
            raise InvalidArgument(f"{where}.{missing[0]}", f"{source}: missing")
        spec = ModelSpec(**{name: entry[name] for name in _FIELDS})
        if spec.id in seen:
            raise InvalidArgument(f"{where}.id", f"{source}: duplicate model id {spec.id!r}")
        seen.add(spec.id)
        specs.append(spec)
    return specs


def load_catalogue(path: str | Path) -> list[ModelSpec]:
    """Read a catalogue file: YAML if the suffix is .yaml/.yml, JSON otherwise."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument("path", f"cannot read catalogue {file}: {exc.strerror}") from None
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidArgument("path", f"{file} is not valid: {exc}") from None
    return _parse(document, str(file))


@lru_cache(maxsize=1)
def _bundled() -> tuple[ModelSpec, ...]:
    text = resources.files("conduit_sidecar").joinpath("data/models.json").read_text("utf-8")
    return tuple(_parse(json.loads(text), "bundled catalogue"))


def default_catalogue() -> list[ModelSpec]:
    """The bundled catalogue (a fresh list; the specs themselves are immutable)."""
    return list(_bundled())


def lookup(model_id: str) -> ModelSpec:
    """The bundled spec for `model_id`, or a neutral spec if the catalogue does not know it."""
    for spec in _bundled():
        if spec.id == model_id:
            return spec
    return ModelSpec.neutral(model_id)
