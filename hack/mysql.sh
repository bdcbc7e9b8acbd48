#!/usr/bin/env bash
# Starts a throwaway MariaDB (Debian's package) on 127.0.0.1 for the tests and
# prints a kine DSN without database name suffix, e.g.
#   mysql://kubesplit:kubesplit@tcp(127.0.0.1:53306)/kubesplit
# Tests append _<random>; kine creates that database.
#   hack/mysql.sh stop   stops it.
set -euo pipefail
DIR=${KUBESPLIT_MYSQLDIR:-/tmp/kubesplit-mysql}
PORT=${KUBESPLIT_MYSQLPORT:-53306}
[ -x /usr/sbin/mariadbd ] || { echo "mariadb-server is not installed: run 'make deps'" >&2; exit 1; }
as_mysql() { if [ "$(id -u)" = 0 ]; then runuser -u mysql -- "$@"; else "$@"; fi; }

if [ "${1:-}" = stop ]; then
  [ -f "$DIR/pid" ] && kill "$(cat "$DIR/pid")" 2>/dev/null || true
  exit 0
fi

if ! mariadb-admin --socket="$DIR/sock" ping >/dev/null 2>&1; then
  rm -rf "$DIR"; mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown mysql: "$DIR"
  as_mysql mariadb-install-db --no-defaults --datadir="$DIR/data" --auth-root-authentication-method=socket >"$DIR/install.log" 2>&1
  as_mysql /usr/sbin/mariadbd --no-defaults --datadir="$DIR/data" --socket="$DIR/sock" --pid-file="$DIR/pid" \
    --bind-address=127.0.0.1 --port="$PORT" --skip-name-resolve --log-error="$DIR/error.log" >/dev/null 2>&1 &
  for _ in $(seq 1 60); do mariadb-admin --socket="$DIR/sock" ping >/dev/null 2>&1 && break; sleep 0.5; done
  mariadb --socket="$DIR/sock" -u root -e "CREATE USER IF NOT EXISTS 'kubesplit'@'%' IDENTIFIED BY 'kubesplit'; GRANT ALL ON *.* TO 'kubesplit'@'%'; FLUSH PRIVILEGES;" 
fi
echo "mysql://kubesplit:kubesplit@tcp(127.0.0.1:$PORT)/kubesplit"
