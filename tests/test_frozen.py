"""`fast_frozen` keeps every dataclass behaviour of the classes it speeds up."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from conduit_sidecar.frozen import fast_frozen


@fast_frozen
@dataclass(frozen=True)
class Sample:
    name: str
    score: float = 0.5
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reference:
    name: str
    score: float = 0.5
    tags: list[str] = field(default_factory=list)


def test_construction_matches_the_generated_init() -> None:
    for args, kwargs in [(("a",), {}), (("a", 0.25), {}), ((), {"name": "b", "tags": ["x"]})]:
        fast, ref = Sample(*args, **kwargs), Reference(*args, **kwargs)  # type: ignore[arg-type]
        assert dataclasses.astuple(fast) == dataclasses.astuple(ref)
        assert repr(fast).replace("Sample", "Reference") == repr(ref)
    assert Sample("a") == Sample("a") and Sample("a") != Sample("a", 1.0)
    assert Sample("a").tags is not Sample("a").tags  # a fresh default per instance


def test_the_class_stays_frozen_and_checks_arguments() -> None:
    sample = Sample("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.score = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        Sample()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Sample("a", 0.1, [], "extra")  # type: ignore[call-arg]


def test_post_init_still_runs() -> None:
    @fast_frozen
    @dataclass(frozen=True)
    class Normalised:
        a: float
        b: float

        def __post_init__(self) -> None:
            total = self.a + self.b
            if total <= 0:
                raise ValueError("b: the sum must be positive")
            object.__setattr__(self, "a", self.a / total)
            object.__setattr__(self, "b", self.b / total)

    assert Normalised(3.0, 1.0) == Normalised(0.75, 0.25)
    with pytest.raises(ValueError, match="sum must be positive"):
        Normalised(0.0, 0.0)


def test_only_frozen_dataclasses_with_an_instance_dict_are_accepted() -> None:
    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True, slots=True)
    class Slotted:
        a: int

    for cls in (Mutable, Slotted, int):
        with pytest.raises(TypeError, match="frozen dataclass"):
            fast_frozen(cls)


def test_fields_may_have_any_name_the_generated_init_uses_itself() -> None:
    # The generated __init__ kept the instance dict in a local `d` and took `self` first, so
    # a field named `d` was set to the instance's own __dict__, and one named `self` was a
    # SyntaxError; the dataclass __init__ handles both.
    @fast_frozen
    @dataclass(frozen=True)
    class Odd:
        d: int
        self: str
        _NO_ARG: int = 7
        tags: list[str] = field(default_factory=list)

    odd = Odd(1, "me")
    assert (odd.d, odd.self, odd._NO_ARG, odd.tags) == (1, "me", 7, [])
    assert Odd(d=2, self="x", tags=["t"]) == Odd(2, "x", 7, ["t"])
