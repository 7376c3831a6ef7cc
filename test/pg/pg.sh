#!/bin/sh
# A throwaway PostgreSQL for the tests: Debian's postgresql binaries, a
# cluster made by initdb in DIR, run by an unprivileged user, listening on a
# unix socket in DIR only (no TCP port to collide with other runs on the
# machine), fsync on (the default: the tests check durability).
#
#   test/pg/pg.sh start DIR   initdb if needed, start, wait; prints the URL
#   test/pg/pg.sh stop DIR    fast shutdown, then removes DIR
#   test/pg/pg.sh kill DIR    immediate shutdown (a crash); DIR is kept
#   test/pg/pg.sh url DIR     prints the libpq URL of the cluster in DIR
#
# LB_PG_CONF (start, a new cluster only): more settings for postgresql.conf,
# separated by ';' (bench/ingest.sh PG_CONF), after the ones below.
#
# As root (CI, the dev container) the server runs as the system user lbtest,
# created here when missing; PostgreSQL refuses to run as root. Otherwise it
# runs as the caller. Auth is "trust" on the socket: DIR is 0700 to its owner
# and the socket 0770, so only that user (and root) can connect.
set -eu

usage() { echo "usage: test/pg/pg.sh start|stop|kill|url DIR" >&2; exit 2; }
[ $# = 2 ] || usage
cmd=$1
dir=$2
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac

bin=${LB_PG_BIN:-}
if [ -z "$bin" ]; then
    for v in 17 16 15 14 13; do
        [ -x /usr/lib/postgresql/$v/bin/initdb ] && { bin=/usr/lib/postgresql/$v/bin; break; }
    done
fi
[ -n "$bin" ] && [ -x "$bin/initdb" ] || {
    echo "pg.sh: no PostgreSQL server binaries (apt-get install postgresql; deps/install.sh --test)" >&2
    exit 3
}

user=$(id -un)
[ "$(id -u)" = 0 ] && user=lbtest
as_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

data="$dir/data"
sock="$dir/sock"
url="postgresql:///postgres?host=$sock&user=$user"

case "$cmd" in
url)
    echo "$url"
    ;;
start)
    if [ "$user" = lbtest ] && ! id lbtest >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin lbtest
    fi
    mkdir -p "$dir"
    if [ "$user" = lbtest ] && ! runuser -u lbtest -- test -x "$(dirname "$dir")"; then
        echo "pg.sh: $user cannot reach $dir: make its parent directories searchable (chmod o+x)" >&2
        exit 1
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
        rm -rf "$data" "$sock"
        mkdir -p "$data" "$sock"
        [ "$(id -u)" = 0 ] && chown "$user" "$dir" "$data" "$sock"
        chmod 700 "$dir" "$data" "$sock"
        as_user "$bin/initdb" -D "$data" -U "$user" --auth=trust -E UTF8 --locale=C.UTF-8 \
            >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
        # Loopback only, and only through the socket; small, as tests need.
        cat >>"$data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$sock'
unix_socket_permissions = 0770
fsync = on
synchronous_commit = on
max_connections = 200
shared_buffers = 64MB
log_min_messages = warning
EOF
        [ -z "${LB_PG_CONF:-}" ] || echo "$LB_PG_CONF" | tr ';' '\n' >>"$data/postgresql.conf"
    fi
    if ! as_user "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_user "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 30 start >/dev/null ||
            { tail -n 20 "$dir/server.log" >&2; exit 1; }
    fi
    echo "$url"
    ;;
stop)
    if [ -f "$data/PG_VERSION" ]; then
        as_user "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
kill)
    as_user "$bin/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null
    ;;
*)
    usage
    ;;
esac
