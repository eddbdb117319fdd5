"""Regenerates the committed Python gRPC stubs from proto/conduit/v1/*.proto.

    python scripts/gen_proto.py           # rewrite conduit_sidecar/_proto/
    python scripts/gen_proto.py --check   # exit 1 if regeneration would change anything

protoc writes absolute imports that mirror the proto package (`from conduit.v1 import ...`),
which would only resolve if `conduit` were a top-level package; they are rewritten to
package-relative imports so the stubs live privately inside `conduit_sidecar._proto`.
The output is flattened (conduit/v1/x_pb2.py -> _proto/x_pb2.py): there is one proto package.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE_DIR = PROTO_ROOT / "conduit" / "v1"
OUT_DIR = ROOT / "conduit_sidecar" / "_proto"

INIT_TEXT = (
    '"""Generated protobuf and gRPC modules for conduit.v1 (scripts/gen_proto.py; do not edit).\n\n'
    "Import them under private aliases; their names are not part of the public API.\n"
    '"""\n'
)

_ABSOLUTE_IMPORT = re.compile(r"^from conduit\.v1 import ", re.MULTILINE)
_PLAIN_IMPORT = re.compile(r"^import conduit\.v1\.(\w+) as ", re.MULTILINE)


def _fix_imports(text: str) -> str:
    text = _ABSOLUTE_IMPORT.sub("from . import ", text)
    return _PLAIN_IMPORT.sub(r"from . import \1 as ", text)


def generate() -> dict[str, str]:
    """Runs protoc and returns {file name: content} of the flattened, import-fixed output."""
    import grpc_tools  # type: ignore[import-untyped]
    from grpc_tools import protoc  # type: ignore[import-untyped]

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(PROTO_PACKAGE_DIR.glob("*.proto"))
    if not protos:
        raise SystemExit(f"gen_proto: no .proto files under {PROTO_PACKAGE_DIR}")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("gen_proto: protoc failed")
        out_pkg = Path(tmp) / "conduit" / "v1"
        files = {"__init__.py": INIT_TEXT}
        for path in sorted(out_pkg.iterdir()):
            if path.suffix in (".py", ".pyi"):
                files[path.name] = _fix_imports(path.read_text())
    return files


def committed() -> dict[str, str]:
    if not OUT_DIR.is_dir():
        return {}
    return {p.name: p.read_text() for p in sorted(OUT_DIR.iterdir()) if p.suffix in (".py", ".pyi")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    fresh = generate()
    current = committed()
    if args.check:
        changed = sorted(n for n in fresh.keys() | current.keys() if fresh.get(n) != current.get(n))
        if changed:
            print(
                "gen_proto: committed stubs are stale; run `python scripts/gen_proto.py`: "
                + ", ".join(changed),
                file=sys.stderr,
            )
            return 1
        print(f"gen_proto: {len(fresh)} files up to date")
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in current.keys() - fresh.keys():
        (OUT_DIR / name).unlink()
    for name, text in fresh.items():
        (OUT_DIR / name).write_text(text)
    print(f"gen_proto: wrote {len(fresh)} files to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
