#!/usr/bin/env bash
# Installs everything Conduit needs on a fresh Debian machine, idempotently:
# Debian packages for Redis and PostgreSQL, a project virtualenv with pinned Python
# dependencies, and the Rust core built into it with maturin.
set -euo pipefail
cd "$(dirname "$0")/.."
# rustup installs the toolchain into ~/.cargo/bin, which a shell without the user's profile
# (cron, env -i, some CI runners) does not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)  # the TLS test makes its certificate
[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install ${need_apt[*]} (Debian packages)" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
if [ "${CONDUIT_BENCH_DEPS:-0}" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-bench.txt
fi
# maturin develop installs the package (Python sources + native _core) into .venv in place.
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin develop --release -q
