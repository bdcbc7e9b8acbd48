#!/usr/bin/env bash
# Starts a throwaway PostgreSQL (Debian's package) on 127.0.0.1 for the tests
# and prints a DSN without database name suffix or query, e.g.
#   postgres://kubesplit:kubesplit@127.0.0.1:55432/kubesplit
# Tests append _<random>?sslmode=disable; kine creates that database.
#   hack/postgres.sh stop   stops it.
set -euo pipefail
PGDIR=${KUBESPLIT_PGDIR:-/tmp/kubesplit-postgres}
PGPORT=${KUBESPLIT_PGPORT:-55432}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -n "$PGBIN" ] || { echo "postgresql is not installed: run 'make deps'" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "${1:-}" = stop ]; then
  [ -d "$PGDIR/data" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null || true
  exit 0
fi

if ! "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"; then
  rm -rf "$PGDIR"
  mkdir -p "$PGDIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$PGDIR"
  echo kubesplit > "$PGDIR/pw"
  [ "$(id -u)" = 0 ] && chown postgres: "$PGDIR/pw"
  as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U kubesplit --pwfile="$PGDIR/pw" -A scram-sha-256 >"$PGDIR/initdb.log"
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=on -c max_connections=200" start >/dev/null
fi
echo "postgres://kubesplit:kubesplit@127.0.0.1:$PGPORT/kubesplit"
