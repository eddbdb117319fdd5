"""FeatureHasher: deterministic across processes and hash seeds, pinned values, the layout
(bias, metadata, hashed words), and any text accepted without failing."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conduit_sidecar.bandit import CoreError, FeatureHasher

TEXT = "How do I sort a list in Python? def f(x): return sorted(x)"

# Pinned: the same text must give this vector on every machine and in every release that
# keeps the feature layout; a change here silently invalidates every stored model.
PINNED_16 = [
    1.0,
    0.05415267363075343,
    0.10209240812496778,
    0.0,
    0.10209240812496778,
    0.29457642182860627,
    -0.29457642182860627,
    0.5891528436572125,
    0.0,
    0.0,
    -0.14728821091430314,
    0.44186463274290944,
    -0.14728821091430314,
    -0.44186463274290944,
    0.0,
    -0.14728821091430314,
]


def test_pinned_vector() -> None:
    v = FeatureHasher(16).featurize(TEXT)
    assert v.dtype == np.float64 and v.shape == (16,)
    np.testing.assert_allclose(v, PINNED_16, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("hash_seed", ["0", "1", "12345"])
def test_same_vector_in_another_process_with_another_hash_seed(hash_seed: str) -> None:
    code = (
        "import sys; from conduit_sidecar.bandit import FeatureHasher; "
        "print(repr(FeatureHasher(64).featurize(sys.argv[1]).tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", code, TEXT], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == repr(FeatureHasher(64).featurize(TEXT).tolist())


def test_layout_bias_metadata_and_unit_norm() -> None:
    h = FeatureHasher(32)
    assert h.dim == 32
    v = h.featurize("Solve $x^2 + 3 = 12$? And what about 7*8?")
    assert v[0] == 1.0
    assert np.linalg.norm(v[1:]) == pytest.approx(1.0, abs=1e-12)
    assert v[3] > 0.0  # math markers
    assert v[4] > 0.0  # question marks
    code = h.featurize("```python\nclass A:\n    def f(self): return {1: 2};\n```")
    assert code[2] > v[2]  # code markers


def test_words_are_case_insensitive_and_order_sensitive() -> None:
    h = FeatureHasher(64)
    np.testing.assert_array_equal(h.featurize("Hello, World"), h.featurize("hello. world"))
    assert not np.array_equal(h.featurize("dog bites man"), h.featurize("man bites dog"))


def test_dimension_is_configurable_and_checked() -> None:
    for dim in (8, 64, 386, 1024):
        assert FeatureHasher(dim).featurize(TEXT).shape == (dim,)
    for bad in (0, 7, -1):
        with pytest.raises(CoreError, match=r"^dim"):
            FeatureHasher(bad)
    with pytest.raises(CoreError, match=r"^dim"):
        FeatureHasher(8.0)  # type: ignore[arg-type]
    with pytest.raises(CoreError, match=r"^text"):
        FeatureHasher(8).featurize(b"bytes")  # type: ignore[arg-type]


def test_empty_and_huge_texts() -> None:
    h = FeatureHasher(64)
    empty = h.featurize("")
    assert empty[0] == 1.0 and not empty[1:].any()
    # Only the first 64 KiB are read, so a text that differs after that gives the same vector.
    huge = "word " * 100_000
    v = h.featurize(huge)
    assert np.all(np.isfinite(v))
    np.testing.assert_array_equal(v, h.featurize(huge + " tail that is never read"))
    # A multi-byte character straddling the cut does not break anything.
    assert np.all(np.isfinite(h.featurize("é" * 40_000)))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400), dim=st.integers(min_value=8, max_value=128))
def test_any_text_gives_a_finite_normalised_vector(text: str, dim: int) -> None:
    v = FeatureHasher(dim).featurize(text)
    assert v.shape == (dim,) and v[0] == 1.0
    assert np.all(np.isfinite(v))
    norm = float(np.linalg.norm(v[1:]))
    assert norm == pytest.approx(1.0, abs=1e-9) or norm == 0.0
