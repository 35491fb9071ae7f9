#!/usr/bin/env bash
# The one test command (README, CI): installs the tools the tests use, makes sure PostgreSQL
# answers (starting the local cluster if it can), builds the server binary for the black-box
# tests, and runs every test of the workspace. PostgreSQL tests are never skipped: without a
# reachable server this script stops with an error that says so.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-tools.sh >/dev/null

PG_URL="${IDENTITY_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export IDENTITY_TEST_PG_URL="$PG_URL"
hostport="${PG_URL#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
PG_HOST="${hostport%%:*}"; PG_PORT="${hostport##*:}"; [ "$PG_PORT" = "$PG_HOST" ] && PG_PORT=5432

pg_up() { (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null; }
if ! pg_up; then
  echo "test: PostgreSQL is not answering at $PG_HOST:$PG_PORT; trying to start the local cluster" >&2
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
fi
if ! pg_up; then
  echo "test: ERROR: PostgreSQL is not reachable at $PG_HOST:$PG_PORT." >&2
  echo "test: start it, or point IDENTITY_TEST_PG_URL at one (trust or password in the URL)." >&2
  exit 1
fi

# One-time codes are delivered through NATS JetStream (tests/tests/delivery.rs).
NATS_HOST=127.0.0.1; NATS_PORT=4222
nats_up() { (exec 3<>"/dev/tcp/$NATS_HOST/$NATS_PORT") 2>/dev/null; }
if ! nats_up && command -v nats-server >/dev/null 2>&1; then
  echo "test: NATS is not answering at $NATS_HOST:$NATS_PORT; starting nats-server with JetStream" >&2
  mkdir -p target/nats
  nohup nats-server -a "$NATS_HOST" -p "$NATS_PORT" -js -sd target/nats >target/nats/server.log 2>&1 &
  for _ in $(seq 1 30); do nats_up && break; sleep 1; done
fi
if ! nats_up; then
  echo "test: ERROR: NATS with JetStream is not reachable at $NATS_HOST:$NATS_PORT (install nats-server, or start it with -js)." >&2
  exit 1
fi

cargo build --quiet -p identity-server -p identity-cli
cargo test --workspace "$@"
