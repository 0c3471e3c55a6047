#!/usr/bin/env bash
# Stop the private PostgreSQL server started by .ci/start-postgres.sh.
#
#   .ci/stop-postgres.sh            stop the server (fast shutdown: open sessions are ended); its data directory,
#                                   role and password are kept, so the next start takes a second or two
#   .ci/stop-postgres.sh --purge    also remove the state directory (data, password, log)
#
# Environment: GAN_BENCH_POSTGRES_DIR (default /var/tmp/gan-bench-postgres), as for start-postgres.sh.
set -euo pipefail

STATE_DIR="${GAN_BENCH_POSTGRES_DIR:-/var/tmp/gan-bench-postgres}"
PURGE=0
for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
    esac
done

log() { echo "[stop-postgres] $*" >&2; }
die() { echo "[stop-postgres] ERROR: $*" >&2; exit 1; }

case "$STATE_DIR" in /*) ;; *) die "GAN_BENCH_POSTGRES_DIR must be an absolute path: $STATE_DIR";; esac
DATA="$STATE_DIR/data"

if [[ ! -d "$STATE_DIR" ]]; then
    log "no state directory $STATE_DIR: nothing to stop"
    exit 0
fi

if [[ -s "$DATA/PG_VERSION" ]]; then
    # The programs of the data directory's own major version, as start-postgres.sh chose them.
    BINDIR="/usr/lib/postgresql/$(cat "$DATA/PG_VERSION")/bin"
    [[ -x $BINDIR/pg_ctl ]] || BINDIR=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
    [[ -x $BINDIR/pg_ctl ]] || die "no pg_ctl to stop the server of $DATA with"
    # The server runs as the owner of its data directory (postgres when started by root); pg_ctl must too.
    owner=$(stat -c %U "$DATA")
    if [[ $(id -u) -eq 0 && "$owner" != root ]]; then
        as_server() { (cd / && runuser -u "$owner" -- "$@"); }
    else
        as_server() { "$@"; }
    fi
    if as_server "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        log "stopping the server of $DATA (pid $(head -1 "$DATA/postmaster.pid"))"
        # fast: roll back open transactions and end sessions (a test killed mid-study leaves some); -w waits for it.
        as_server "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null \
            || { log "fast shutdown did not finish in 60 s: immediate"; \
                 as_server "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w -t 30 stop >/dev/null; }
    else
        log "server not running"
    fi
fi

if ((PURGE)); then
    log "removing $STATE_DIR"
    rm -rf -- "$STATE_DIR"
fi
log "stopped"
