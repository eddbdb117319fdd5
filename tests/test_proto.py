"""The contract: committed stubs match the .proto, and the .proto documents every field."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conduit_sidecar._proto import conduit_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto" / "conduit" / "v1" / "conduit.proto"


def gen_proto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_what_protoc_generates() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_check_fails_when_a_stub_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = gen_proto()
    out = tmp_path / "_proto"
    shutil.copytree(ROOT / "conduit_sidecar" / "_proto", out)
    monkeypatch.setattr(module, "OUT_DIR", out)
    assert module.main(["--check"]) == 0
    stub = out / "conduit_pb2.pyi"
    stub.write_text(stub.read_text() + "\n# hand edit\n")
    assert module.main(["--check"]) == 1
    (out / "stray_pb2.py").write_text("")
    assert module.main([]) == 0  # regenerating repairs both and removes the stray file
    assert module.main(["--check"]) == 0 and not (out / "stray_pb2.py").exists()


def test_generated_imports_are_package_relative() -> None:
    for path in (ROOT / "conduit_sidecar" / "_proto").glob("*.py*"):
        text = path.read_text()
        assert not re.search(r"^(from|import) conduit\.", text, re.MULTILINE), path.name
    assert (
        "from . import conduit_pb2"
        in (ROOT / "conduit_sidecar/_proto/conduit_pb2_grpc.py").read_text()
    )


def test_every_field_message_and_rpc_is_documented() -> None:
    lines = PROTO.read_text().splitlines()
    declaration = re.compile(
        r"^\s*(?:(?:optional|repeated)\s+)?(?:[\w.]+|map<\w+,\s*\w+>)\s+\w+\s*=\s*\d+;"
        r"|^\s*(message|service|rpc)\s"
    )
    undocumented = [
        line.strip()
        for i, line in enumerate(lines)
        if declaration.match(line) and not lines[i - 1].strip().startswith("//")
    ]
    assert undocumented == []


def test_options_for_other_languages() -> None:
    options = conduit_pb2.DESCRIPTOR.GetOptions()
    assert options.go_package.endswith(";conduitv1")
    assert options.java_package == "dev.conduit.v1" and options.java_multiple_files
    assert options.csharp_namespace == "Conduit.V1"
    assert conduit_pb2.DESCRIPTOR.package == "conduit.v1"


def test_presence_is_explicit_where_absence_matters() -> None:
    optional = {
        (message, field)
        for message, field in [
            ("Constraints", "max_cost_usd"),
            ("Constraints", "max_latency_s"),
            ("RouteRequest", "ttl_s"),
            ("TrackRequest", "cost_usd"),
            ("TrackRequest", "latency_s"),
            ("TrackRequest", "ttl_s"),
            ("RecordSessionFeedbackRequest", "propagation_weight"),
            ("UpdateRequest", "confidence"),
        ]
    }
    for message, field in optional:
        descriptor = conduit_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name[field]
        assert descriptor.has_presence, f"{message}.{field}"
    payload = conduit_pb2.RecordFeedbackRequest.DESCRIPTOR.fields_by_name["payload"]
    assert payload.message_type.full_name == "google.protobuf.Struct"
