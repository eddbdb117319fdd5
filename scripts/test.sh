#!/usr/bin/env bash
# The whole test suite: installs what is missing, starts Redis and PostgreSQL on loopback,
# then runs the lint gates, the Rust tests and the Python tests. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# rustup installs the toolchain into ~/.cargo/bin, which a shell without the user's profile
# (cron, env -i, some CI runners) does not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# runuser (PostgreSQL is run as its own user when the tests run as root) is in sbin, which
# a non-root default PATH leaves out.
export PATH="$PATH:/usr/sbin:/sbin"

echo "== setup"
bash scripts/setup.sh
eval "$(bash scripts/services.sh)"
export PATH="$PWD/.venv/bin:$PATH"

echo "== lints"
cargo fmt --all --check
cargo clippy --all-targets -q -- -D warnings
cargo clippy --all-targets --features python -q -- -D warnings
ruff check .
ruff format --check .
mypy
python -m mypy.stubtest conduit_sidecar._core
python scripts/gen_proto.py --check

echo "== cargo test"
cargo test -q --release -p conduit_core

echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
