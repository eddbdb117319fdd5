"""`fast_frozen`: a cheaper `__init__` for frozen dataclasses built on every request.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__`
(frozen classes refuse plain assignment), which makes a five-field record cost about 1.5 us
to build, twice what this one costs (`benches/micro_python.py`). Track and feedback build
half a dozen such records per call (accumulators, contributions, marks, results). The
replacement writes the fields straight into the instance `__dict__`: same signature,
defaults, default factories and `__post_init__`, and the class stays frozen (assignment
after construction still raises).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_NO_ARG = object()  # placeholder default of a field with a default_factory

# Names the generated __init__ uses besides the fields, in dataclasses' own style
# (`__dataclass_self__`), so that no field name (`self`, `d`, ...) can collide with them.
_SELF = "__fast_frozen_self__"
_DICT = "__fast_frozen_dict__"
_MISSING = "__fast_frozen_no_arg__"


def fast_frozen(cls: type[T]) -> type[T]:
    """Replace the `__init__` of the frozen dataclass `cls` (apply above `@dataclass`)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_frozen needs a frozen dataclass without slots")
    namespace: dict[str, Any] = {_MISSING: _NO_ARG}
    signature: list[str] = []
    body: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not field.init or field.kw_only:
            raise TypeError(f"{cls.__name__}.{field.name}: init=False/kw_only not supported")
        name = field.name
        if field.default is not dataclasses.MISSING:
            namespace[f"__fast_frozen_default_{name}__"] = field.default
            signature.append(f"{name}=__fast_frozen_default_{name}__")
        elif field.default_factory is not dataclasses.MISSING:
            factory = f"__fast_frozen_factory_{name}__"
            namespace[factory] = field.default_factory
            signature.append(f"{name}={_MISSING}")
            body.append(f"    if {name} is {_MISSING}: {name} = {factory}()")
        else:
            signature.append(name)
        body.append(f"    {_DICT}[{name!r}] = {name}")
    post_init = f"    {_SELF}.__post_init__()" if hasattr(cls, "__post_init__") else ""
    source = "\n".join(
        [
            f"def __init__({_SELF}, {', '.join(signature)}):",
            f"    {_DICT} = {_SELF}.__dict__",
            *body,
            post_init,
        ]
    )
    exec(source, namespace)  # the source is built above from field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
