"""Per-call costs of the Python pieces the session-2 changes replaced, old and new side by
side in one process (BENCHMARKS.md, "gRPC sidecar"):

    python benches/micro_python.py

- the stores' decision record: format 2 (`decision_to_json` / `decision_from_json`) against
  format 1 (`RoutingDecision.to_dict` as JSON with `allow_nan=False`, and `from_dict`);
- building a frozen five-field record with `fast_frozen` against the generated `__init__`;
- reading a feedback payload (`google.protobuf.Struct`) with the servicer's converter against
  `json_format.MessageToDict`.

Each is the best of 5 repetitions of a timed loop (`timeit`), in microseconds per call.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from dataclasses import fields, make_dataclass

from google.protobuf import json_format, struct_pb2

from conduit_sidecar import Query, Router
from conduit_sidecar.feedback.observation import Accumulators
from conduit_sidecar.feedback.stores.base import decision_from_json, decision_to_json
from conduit_sidecar.query import RoutingDecision
from conduit_sidecar.servicer import _struct

# The real record (fast_frozen) against the same fields with the generated __init__.
Plain = make_dataclass(
    "Plain", [(f.name, f.type, f.default) for f in fields(Accumulators)], frozen=True
)


def per_call_us(fn: Callable[[], object], number: int = 20_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    decision = Router().decide(Query(text="Write a Python function that merges two lists"))
    v1 = json.dumps(decision.to_dict(), separators=(",", ":"), allow_nan=False)
    v2 = decision_to_json(decision)
    payload = struct_pb2.Struct()
    payload.update({"value": "up", "rating": 4, "tags": ["a", "b"]})
    rows = [
        ("decision record, write", lambda: json.dumps(
            decision.to_dict(), separators=(",", ":"), allow_nan=False
        ), lambda: decision_to_json(decision)),
        ("decision record, read", lambda: RoutingDecision.from_dict(json.loads(v1)),
         lambda: decision_from_json(v2)),
        ("frozen 5-field record", lambda: Plain(1.0, 2.0, 0.5, None, 0.3),
         lambda: Accumulators(1.0, 2.0, 0.5, None, 0.3)),
        ("Struct payload to dict", lambda: json_format.MessageToDict(payload),
         lambda: _struct(payload)),
    ]  # fmt: skip
    print(f"{'piece':26s} {'old us':>8s} {'new us':>8s}")
    for name, old, new in rows:
        print(f"{name:26s} {per_call_us(old):8.2f} {per_call_us(new):8.2f}")


if __name__ == "__main__":
    main()
