#!/bin/sh
# The part of the official image's docker-entrypoint.sh that docker/compose.yaml and the chart rely on: an empty
# PGDATA is initialised with POSTGRES_USER (default postgres) and POSTGRES_PASSWORD, connections from the network
# are authenticated with POSTGRES_HOST_AUTH_METHOD (default scram-sha-256, which then needs a password),
# POSTGRES_DB (default: the user's name) is created, the scripts in /docker-entrypoint-initdb.d run (*.sh: run if
# executable, else sourced; *.sql: psql), then the server runs in the foreground as the postgres user.
# Started as root (compose) it owns the directories to postgres and drops to it; started as postgres (the
# chart's pod, uid 999, read-only root) it changes nothing outside PGDATA.
# One addition for a shared host network: POSTGRES_LISTEN_ADDRESSES (default *), the addresses to bind.
set -eu
user="${POSTGRES_USER:-postgres}"
database="${POSTGRES_DB:-$user}"
method="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
if [ "$method" != trust ] && [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: POSTGRES_PASSWORD is not set (set it, or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /run/postgresql
    chown -R postgres:postgres "$PGDATA" /run/postgresql
    run() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
else
    mkdir -p "$PGDATA"
    run() { "$@"; }
fi
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    [ "$(id -u)" != 0 ] || chown postgres "$pwfile"
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        run initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host="$method" >/dev/null
    else
        run initdb --username="$user" --auth-local=trust --auth-host="$method" >/dev/null
    fi
    rm -f "$pwfile"
    printf 'host all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
    # Only the unix socket while the database is created, so no client sees a half-initialised server.
    run pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait start >/dev/null
    if [ "$database" != postgres ]; then
        run psql --username="$user" --dbname=postgres --quiet --command="CREATE DATABASE \"$database\""
    fi
    # The chart's create-owner.sh lives here: the database's owner, no superuser (as the official image does it).
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sh)
                echo "running $script"
                if [ -x "$script" ]; then run "$script"; else (. "$script"); fi
                ;;
            *.sql)
                echo "running $script"
                run psql -v ON_ERROR_STOP=1 --username="$user" --dbname="$database" --quiet --file="$script"
                ;;
        esac
    done
    run pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop >/dev/null
    echo "PostgreSQL initialised in $PGDATA (user $user, database $database, host auth $method)"
fi
if [ "$1" = postgres ]; then
    shift
    if [ "$(id -u)" = 0 ]; then
        set -- setpriv --reuid=postgres --regid=postgres --init-groups postgres "$@"
    else
        set -- postgres "$@"
    fi
    exec "$@" -D "$PGDATA" -c listen_addresses="${POSTGRES_LISTEN_ADDRESSES:-*}"
fi
exec "$@"
