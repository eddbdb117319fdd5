"""Model specs, the bundled catalogue, catalogue files and the cost estimate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.models import (
    EXPECTED_OUTPUT_TOKENS,
    ModelSpec,
    default_catalogue,
    estimate_cost_usd,
    estimate_input_tokens,
    load_catalogue,
    lookup,
)
from conduit_sidecar.reward import cost_score


def test_bundled_catalogue_has_widely_used_models_with_prices() -> None:
    catalogue = {spec.id: spec for spec in default_catalogue()}
    for model_id in (
        "gpt-4o-mini",
        "gpt-4o",
        "claude-3-5-haiku",
        "claude-sonnet-4",
        "gemini-2.0-flash",
        "llama-3.1-8b",
        "mistral-small",
    ):
        assert model_id in catalogue
    assert catalogue["gpt-4o-mini"].input_usd_per_mtok == 0.15
    assert catalogue["gpt-4o-mini"].output_usd_per_mtok == 0.60
    assert catalogue["gpt-4o"].input_usd_per_mtok == 2.50
    for spec in catalogue.values():
        assert spec.output_usd_per_mtok >= spec.input_usd_per_mtok > 0.0
        assert spec.expected_latency_s > 0.0
        assert 0.0 < spec.quality_prior <= 1.0
    # A fresh list each time, so callers may edit theirs.
    first = default_catalogue()
    first.clear()
    assert default_catalogue()


def test_catalogue_prices_span_the_cost_scale() -> None:
    # A typical call (~500 input characters) on the cheapest and dearest bundled models lands
    # far apart on the reward's cost scale.
    costs = [estimate_cost_usd(spec, "x" * 500) for spec in default_catalogue()]
    assert cost_score(min(costs)) - cost_score(max(costs)) > 0.5


def test_lookup_known_and_unknown() -> None:
    assert lookup("gpt-4o").provider == "openai"
    neutral = lookup("my-finetune")
    assert neutral.id == "my-finetune"
    assert neutral.provider == "unknown"
    assert neutral.input_usd_per_mtok == neutral.output_usd_per_mtok == 0.0


def test_token_and_cost_estimates() -> None:
    assert estimate_input_tokens("") == 0
    assert estimate_input_tokens("abcd") == 1
    assert estimate_input_tokens("abcde") == 2
    spec = ModelSpec("m", "p", 1.0, 2.0, 1.0, 0.5)
    assert estimate_cost_usd(spec, "x" * 400) == pytest.approx(
        (100 * 1.0 + EXPECTED_OUTPUT_TOKENS * 2.0) / 1e6
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"id": ""}, "model.id"),
        # Refused by the policy before, as "policy: arms: ...", naming no model.
        ({"id": "m\udcff"}, "model.id"),
        ({"id": "é" * 513}, "model.id"),  # 1026 bytes in UTF-8
        # PostgreSQL's jsonb refused the snapshot metadata listing it (compaction failed).
        ({"id": "a\x00b"}, "model.id"),
        ({"input_usd_per_mtok": -1.0}, "m.input_usd_per_mtok"),
        ({"output_usd_per_mtok": math.nan}, "m.output_usd_per_mtok"),
        ({"expected_latency_s": math.inf}, "m.expected_latency_s"),
        ({"quality_prior": 1.5}, "m.quality_prior"),
        ({"quality_prior": "high"}, "m.quality_prior"),
    ],
)
def test_bad_spec_names_the_field(kwargs: dict[str, object], field: str) -> None:
    values: dict[str, object] = {
        "id": "m",
        "provider": "p",
        "input_usd_per_mtok": 1.0,
        "output_usd_per_mtok": 1.0,
        "expected_latency_s": 1.0,
        "quality_prior": 0.5,
    }
    values.update(kwargs)
    with pytest.raises(InvalidArgument) as info:
        ModelSpec(**values)  # type: ignore[arg-type]
    assert info.value.field == field


ENTRY = {
    "id": "a",
    "provider": "p",
    "input_usd_per_mtok": 1,
    "output_usd_per_mtok": 2,
    "expected_latency_s": 1.5,
    "quality_prior": 0.6,
}


def test_load_json_and_yaml(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [ENTRY, {**ENTRY, "id": "b"}]}))
    specs = load_catalogue(path)
    assert [s.id for s in specs] == ["a", "b"]
    assert specs[0].input_usd_per_mtok == 1.0
    yaml_path = tmp_path / "models.yaml"
    yaml_path.write_text(
        "- id: a\n  provider: p\n  input_usd_per_mtok: 1\n  output_usd_per_mtok: 2\n"
        "  expected_latency_s: 1.5\n  quality_prior: 0.6\n"
    )
    assert load_catalogue(str(yaml_path)) == specs[:1]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "models"),
        ({"models": "a"}, "models"),
        ([ENTRY, ENTRY], "models[1].id"),
        ([{**ENTRY, "price": 1}], "models[0].price"),
        ([{k: v for k, v in ENTRY.items() if k != "provider"}], "models[0].provider"),
        ([ENTRY, 3], "models[1]"),
        ([{**ENTRY, "quality_prior": -1}], "a.quality_prior"),
    ],
)
def test_bad_catalogue_files(tmp_path: Path, document: object, field: str) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InvalidArgument) as info:
        load_catalogue(path)
    assert info.value.field == field


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as info:
        load_catalogue(tmp_path / "missing.json")
    assert info.value.field == "path"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InvalidArgument) as info:
        load_catalogue(broken)
    assert info.value.field == "path"
    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("a: [unclosed")
    with pytest.raises(InvalidArgument):
        load_catalogue(bad_yaml)
