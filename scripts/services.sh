#!/usr/bin/env bash
# Starts the Redis and PostgreSQL servers the tests need, on loopback only, on dedicated
# ports so they never collide with servers the machine already runs. Idempotent: a server
# already answering is left as it is. Prints the URLs as shell exports.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${CONDUIT_SERVICES_DIR:-/tmp/conduit-services}
REDIS_PORT=${CONDUIT_TEST_REDIS_PORT:-6390}
PG_PORT=${CONDUIT_TEST_PG_PORT:-5440}
mkdir -p "$STATE"

if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --daemonize yes --logfile "$STATE/redis.log" --pidfile "$STATE/redis.pid" >/dev/null
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGDATA="$STATE/pg"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if ! "$PGBIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1; then
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$STATE/pg"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U conduit --auth=trust >/dev/null
  fi
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$STATE" 2>/dev/null || true
  # A server killed with the session leaves its pid file behind; if that pid now belongs to
  # no postgres process, the file is stale and would only confuse the start below.
  if [ -f "$PGDATA/postmaster.pid" ]; then
    oldpid=$(head -1 "$PGDATA/postmaster.pid")
    if ! ps -o comm= -p "$oldpid" 2>/dev/null | grep -q postgres; then
      rm -f "$PGDATA/postmaster.pid"
    fi
  fi
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-h 127.0.0.1 -p $PG_PORT -k $PGDATA -c fsync=off -c max_connections=300" start >/dev/null
fi
"$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U conduit -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname='conduit_test'" | grep -q 1 \
  || "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U conduit -d postgres -qc "CREATE DATABASE conduit_test"

echo "export CONDUIT_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
echo "export CONDUIT_TEST_POSTGRES_URL=postgresql://conduit@127.0.0.1:$PG_PORT/conduit_test"
