#!/bin/sh
# Starts Debian's PostgreSQL on $PGDATA, making the cluster on first start:
# user $POSTGRES_USER with password $POSTGRES_PASSWORD (scram-sha-256 over
# the network), database $POSTGRES_DB. "velo-postgres ready" is the
# healthcheck.
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
: "${POSTGRES_USER:=velo}" "${POSTGRES_DB:=velo}"
if [ "${1:-}" = ready ]; then
	exec "$bin/pg_isready" -q -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"
fi
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
	echo "velo-postgres: set POSTGRES_PASSWORD" >&2
	exit 1
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	pw=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
	"$bin/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" -A scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
	rm -f "$pw"
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
	"$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
	PGPASSWORD=$POSTGRES_PASSWORD "$bin/createdb" -h /var/run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
	"$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
	echo "velo-postgres: database $POSTGRES_DB made for $POSTGRES_USER"
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*'
