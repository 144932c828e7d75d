#!/bin/bash
# PostgreSQL of the compose stack (Debian's postgresql-15): on the first start initdb in $PGDATA
# (a volume) and create $POSTGRES_USER with $POSTGRES_PASSWORD and database $POSTGRES_DB; then run
# the server on $POSTGRES_BIND:$POSTGRES_PORT, password (scram) auth over TCP, its socket in /tmp.
set -euo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required (from the stack env file)}"
POSTGRES_USER=${POSTGRES_USER:-fathom}
POSTGRES_DB=${POSTGRES_DB:-fathom}
POSTGRES_BIND=${POSTGRES_BIND:-127.0.0.1}
POSTGRES_PORT=${POSTGRES_PORT:-5432}
SOCKETS=${POSTGRES_SOCKET_DIR:-/tmp}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb -D "$PGDATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$SOCKETS" start >/dev/null
    psql -v ON_ERROR_STOP=1 -q -h "$SOCKETS" -U postgres -d postgres \
        -v user="$POSTGRES_USER" -v pw="$POSTGRES_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"user";
SQL
    pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
    echo "fathom-postgres: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi
exec postgres -D "$PGDATA" -c listen_addresses="$POSTGRES_BIND" -p "$POSTGRES_PORT" \
    -c unix_socket_directories="$SOCKETS" "$@"
