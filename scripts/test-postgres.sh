#!/usr/bin/env bash
# Run the test suite against a throw-away PostgreSQL server on loopback.
# Installs Debian's postgresql package when no server binaries are present,
# creates a cluster in a temporary folder, runs scripts/test.sh with
# GLITCHDEX_TEST_DATABASE_URL pointing at it, and removes the cluster on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ]; then
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
BIN="$(pg_bin)"

PGTMP="$(mktemp -d /tmp/glitchdex-pg.XXXXXX)"
# The server refuses to run as root: as root, run it as Debian's postgres user.
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$PGTMP"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi
PORT="${GLITCHDEX_TEST_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

stop_server() {
    as_pg "$BIN/pg_ctl" -D "$PGTMP/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PGTMP"
}
trap stop_server EXIT

as_pg "$BIN/initdb" -D "$PGTMP/data" -U postgres -A trust -E UTF8 >/dev/null
# fsync off: the cluster is thrown away, durability buys nothing here.
as_pg "$BIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGTMP -c fsync=off -c max_connections=200" start >/dev/null
echo "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT"

GLITCHDEX_TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres" bash scripts/test.sh "$@"
