#!/usr/bin/env bash
# Installs what is missing, then starts the sidecar on its embedded default store
# (SQLite at $XDG_STATE_HOME/conduit/conduit.db, default ~/.local/state/conduit/conduit.db), listening on 127.0.0.1:50051. Extra arguments go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/conduit-sidecar serve "$@"
