#!/bin/sh
# Entrypoint of kubesplit/postgres: Debian's PostgreSQL 15 for the datastore's
# postgres backend in test clusters.
#
# A shell script, not a Go program of ours: the image is Debian's PostgreSQL
# and already has /bin/sh, so the script needs no build step and no binary
# from bin/ (the image builds from its cached Debian base alone), and each
# step is one of PostgreSQL's own commands (initdb, postgres) that can be
# checked against its documentation. It ends by exec'ing postgres, so the
# server is the container's process 1 and gets `docker stop`'s signal itself.
#
# First start (no PG_VERSION in PGDATA, /var/lib/postgresql/data, a volume):
# initdb as the postgres user, superuser POSTGRES_USER (default kubesplit)
# with the password POSTGRES_PASSWORD, a database of the same name
# (POSTGRES_DB), scram-sha-256 for every connection, local or from any
# address, listening on every address on port 5432. Later starts reuse the
# data directory as it is: the password is the one set at the first start.
# POSTGRES_PASSWORD is required on every start all the same, so that a
# missing secret shows at once. The password is never printed, and never on
# a command line (initdb reads it from a file only the postgres user reads).
# Arguments are passed to postgres (e.g. -c shared_buffers=256MB).
set -eu

PGBIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA
me=kubesplit/postgres

if [ -z "${POSTGRES_PASSWORD:-}" ]; then
	echo "$me: POSTGRES_PASSWORD is not set; refusing to start." >&2
	echo "$me: set the superuser's password, e.g. docker run -e POSTGRES_PASSWORD=... (and POSTGRES_USER, default kubesplit)" >&2
	exit 1
fi

# The image runs as postgres (999:999). Started as root anyway (docker run
# --user 0, e.g. for a bind mount owned by root): hand the data directory to
# postgres and run this script again as postgres. The server never runs as root.
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /run/postgresql
	find "$PGDATA" /run/postgresql \( ! -user postgres -o ! -group postgres \) -exec chown -h postgres:postgres {} +
	chmod 0700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	user=${POSTGRES_USER:-kubesplit}
	db=${POSTGRES_DB:-$user}
	echo "$me: first start: initdb $PGDATA, superuser $user, database $db"
	umask 077
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# printf is built into the shell: the password is in no process's arguments
	printf '%s\n' "$POSTGRES_PASSWORD" >"$tmp/pw"
	"$PGBIN/initdb" --pgdata="$PGDATA" --username="$user" --pwfile="$tmp/pw" \
		--auth-local=scram-sha-256 --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >"$tmp/initdb.log" 2>&1 || {
		cat "$tmp/initdb.log" >&2
		exit 1
	}
	rm -f "$tmp/pw"
	cat >"$PGDATA/pg_hba.conf" <<-'EOF'
	# kubesplit/postgres: a password (scram-sha-256) for every connection,
	# from the container itself or from any address (a private test network)
	# TYPE  DATABASE     USER  ADDRESS  METHOD
	local   all          all            scram-sha-256
	host    all          all   all      scram-sha-256
	local   replication  all            scram-sha-256
	host    replication  all   all      scram-sha-256
	EOF
	# after initdb's own settings, so these win
	cat >>"$PGDATA/postgresql.conf" <<-'EOF'

	# kubesplit/postgres
	listen_addresses = '*'
	port = 5432
	max_connections = 200
	fsync = on
	password_encryption = scram-sha-256
	unix_socket_directories = '/run/postgresql'
	# the image leaves LLVM out
	jit = off
	EOF
	if [ "$db" != postgres ]; then
		# single-user mode: no server, no connection, no password needed yet
		q=$(printf '%s' "$db" | sed 's/"/""/g')
		echo "CREATE DATABASE \"$q\"" | "$PGBIN/postgres" --single -j -D "$PGDATA" postgres >"$tmp/createdb.log" 2>&1 || {
			cat "$tmp/createdb.log" >&2
			exit 1
		}
	fi
	rm -rf "$tmp"
	trap - EXIT
	umask 022
	echo "$me: initialised"
fi

exec "$PGBIN/postgres" -D "$PGDATA" "$@"
