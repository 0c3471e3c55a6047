#!/usr/bin/env bash
# Start a private PostgreSQL server for tests/test_postgres.py (a study on Optuna's RDB storage), on a Debian machine,
# without systemd: Debian's server binaries (installed with apt-get if absent), a data directory of its own, listening
# on 127.0.0.1 and on a unix socket in its state directory, with a password role `gan_bench` that may create
# databases (each test makes and drops its own) and a database `gan_bench`.
#
# PostgreSQL refuses to run as root: run as root, the server runs as the `postgres` system user (Debian's package
# creates it); run as another user, it runs as that user (then the binaries must already be installed).
#
# Everything (data directory, socket, log, password) lives in ONE state directory: $GAN_BENCH_POSTGRES_DIR, default
# /var/tmp/gan-bench-postgres.
#
# Idempotent: a server already running from that directory is left alone (its role and database are checked), so
# running it a second time is a no-op; after .ci/stop-postgres.sh it restarts in a second or two.
#
# The LAST line of stdout is always `export GAN_BENCH_POSTGRES_URL=postgresql://gan_bench:<password>@127.0.0.1:<port>/gan_bench`,
# so:
#     eval "$(.ci/start-postgres.sh | tail -1)"
# Progress messages go to stderr.
#
# Optional environment:
#   GAN_BENCH_POSTGRES_DIR       state directory (default /var/tmp/gan-bench-postgres)
#   GAN_BENCH_POSTGRES_PORT      TCP port on 127.0.0.1 (default 6821, beside the SLURM test cluster's 6817-6820)
#   GAN_BENCH_POSTGRES_TIMEOUT   seconds to wait for the server (default 60)
set -euo pipefail

STATE_DIR="${GAN_BENCH_POSTGRES_DIR:-/var/tmp/gan-bench-postgres}"
PORT="${GAN_BENCH_POSTGRES_PORT:-6821}"
TIMEOUT="${GAN_BENCH_POSTGRES_TIMEOUT:-60}"
ROLE=gan_bench
DATABASE=gan_bench

log() { echo "[start-postgres] $*" >&2; }
die() { echo "[start-postgres] ERROR: $*" >&2; exit 1; }

case "$STATE_DIR" in /*) ;; *) die "GAN_BENCH_POSTGRES_DIR must be an absolute path: $STATE_DIR";; esac
[[ "$PORT" =~ ^[1-9][0-9]*$ ]] || die "GAN_BENCH_POSTGRES_PORT must be a port number: $PORT"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "GAN_BENCH_POSTGRES_TIMEOUT must be a positive integer: $TIMEOUT"

T0=$(date +%s.%N)
elapsed() { awk -v t0="$T0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'; }

# ---------------------------------------------------------------- binaries
# Debian keeps the server programs (initdb, pg_ctl, postgres) out of PATH, under /usr/lib/postgresql/<major>/bin:
# take the newest installed; else whatever PATH has (another distribution, a build of one's own).
find_bindir() {
    local dir
    for dir in $(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V -r); do  # the pattern itself if none: skipped below
        [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]] && { echo "$dir"; return 0; }
    done
    dir=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]] && { echo "$dir"; return 0; }
    return 1
}

if ! BINDIR=$(find_bindir); then
    [[ $(id -u) -eq 0 ]] || die "no PostgreSQL server programs (initdb, pg_ctl, postgres) here, and only root can" \
        "install them: apt-get install postgresql (or run this script as root)"
    log "installing Debian's postgresql"
    "$(dirname "$0")/debian-install.sh" /tmp/gan-bench-postgres-apt.log postgresql || die "could not install postgresql"
    BINDIR=$(find_bindir) || die "postgresql installed, but no initdb/pg_ctl/postgres found under /usr/lib/postgresql"
    log "postgresql installed ($(elapsed) s)"
fi
PSQL="$BINDIR/psql"
[[ -x $PSQL ]] || PSQL=$(command -v psql) || die "no psql (Debian: apt-get install postgresql-client)"
MAJOR=$("$BINDIR/postgres" --version | sed -n 's/.* \([0-9][0-9]*\)\.[0-9].*/\1/p' | head -1)
[[ -n "$MAJOR" ]] || die "could not read the server version from '$BINDIR/postgres --version'"

# ---------------------------------------------------------------- who runs the server
if [[ $(id -u) -eq 0 ]]; then
    SERVER_USER=postgres
    if ! id -u "$SERVER_USER" >/dev/null 2>&1; then  # binaries present without Debian's package, which makes it
        log "creating the system user $SERVER_USER"
        useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home --shell /usr/sbin/nologin \
            "$SERVER_USER" || die "could not create the system user $SERVER_USER"
    fi
    # From /: the caller's folder may be one the server user cannot enter (initdb and pg_ctl complain there).
    as_server() { (cd / && runuser -u "$SERVER_USER" -- "$@"); }
else
    SERVER_USER=$(id -un)
    as_server() { "$@"; }
fi

# ---------------------------------------------------------------- layout
DATA="$STATE_DIR/data"
SOCKET_DIR="$STATE_DIR/socket"
LOG="$STATE_DIR/server.log"
PASSWORD_FILE="$STATE_DIR/password"

mkdir -p "$STATE_DIR" "$SOCKET_DIR"
chmod 0700 "$STATE_DIR"   # holds the password; the server user owns it, the data directory must be private
[[ $(id -u) -ne 0 ]] || chown "$SERVER_USER": "$STATE_DIR" "$SOCKET_DIR"
as_server test -w "$STATE_DIR" -a -x "$STATE_DIR" \
    || die "the server user $SERVER_USER cannot write $STATE_DIR (is a parent folder private?); set GAN_BENCH_POSTGRES_DIR"

# The role's password, kept across restarts. Only letters and digits, so the URL needs no escaping.
if [[ ! -s "$PASSWORD_FILE" ]]; then
    (umask 077; head -c 512 /dev/urandom | tr -dc 'A-Za-z0-9' | cut -c1-24 >"$PASSWORD_FILE")
fi
PASSWORD=$(tr -dc 'A-Za-z0-9' <"$PASSWORD_FILE")
[[ ${#PASSWORD} -ge 16 ]] || die "$PASSWORD_FILE holds no usable password; remove it and run again"

# ---------------------------------------------------------------- helpers
# running: the server of this data directory is up (pg_ctl checks the postmaster.pid it wrote and the process).
running() { as_server "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
# wait_for COMMAND...: retry COMMAND every 0.2 s until it succeeds or TIMEOUT.
wait_for() {
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
# admin_sql: SQL on stdin, run as the server's superuser (the server user itself) over the unix socket (peer
# authentication: no password to keep for the superuser).
admin_sql() {
    as_server "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -d postgres
}

# ---------------------------------------------------------------- data directory
if [[ -s "$DATA/PG_VERSION" ]]; then
    have=$(cat "$DATA/PG_VERSION")
    [[ "$have" == "$MAJOR" ]] || die "$DATA was made by PostgreSQL $have, these programs are $MAJOR ($BINDIR):" \
        "run .ci/stop-postgres.sh --purge, then this script again"
else
    log "initialising the data directory $DATA (PostgreSQL $MAJOR, as $SERVER_USER)"
    rm -rf "$DATA"
    # Local connections (the socket) by peer, TCP by password (SCRAM): the URL carries the role's password, as a
    # user's storage URL to a real server does.
    as_server "$BINDIR/initdb" -D "$DATA" --encoding=UTF8 --no-locale --auth-local=peer \
        --auth-host=scram-sha-256 >"$STATE_DIR/initdb.log" 2>&1 \
        || die "initdb failed (log: $STATE_DIR/initdb.log)"
fi

# Our settings in a file of their own, included from postgresql.conf (written once), so a restart reads the same.
conf="$DATA/gan-bench.conf"
tmp=$(mktemp)
cat >"$tmp" <<EOF
# Generated by gan-bench .ci/start-postgres.sh. Edits are overwritten.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKET_DIR'
# A throwaway test server: surviving a power cut is not what its tests check, and on a shared CI machine flushing
# every commit to disk only slows the study down. Transactions, locks and isolation are unchanged.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
if cmp -s "$tmp" "$conf"; then
    rm -f "$tmp"
    conf_changed=0
else
    chmod 0600 "$tmp"
    [[ $(id -u) -ne 0 ]] || chown "$SERVER_USER": "$tmp"
    mv -f "$tmp" "$conf"
    conf_changed=1
fi
grep -qx "include 'gan-bench.conf'" "$DATA/postgresql.conf" \
    || as_server sh -c "echo \"include 'gan-bench.conf'\" >>'$DATA/postgresql.conf'"

# ---------------------------------------------------------------- server
if running; then
    log "server already running (pid $(head -1 "$DATA/postmaster.pid"))"
    ((conf_changed == 0)) || log "WARNING: $conf changed since the server started; it still uses the old settings:" \
        "run .ci/stop-postgres.sh, then this script again"
else
    if command -v ss >/dev/null && [[ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]]; then
        die "port $PORT is already in use (another server, or another GAN_BENCH_POSTGRES_DIR?): stop it, or set" \
            "GAN_BENCH_POSTGRES_PORT"
    fi
    log "starting PostgreSQL $MAJOR on 127.0.0.1:$PORT and $SOCKET_DIR (log: $LOG)"
    # pg_ctl -l sends the server's output to the log, so nothing of it holds this script's stdout (a caller's
    # $(... | tail -1) returns as soon as the script ends); -w waits until it accepts connections.
    as_server "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$TIMEOUT" start >/dev/null \
        || { tail -20 "$LOG" >&2 2>/dev/null; die "the server did not start (log: $LOG)"; }
fi
wait_for as_server "$BINDIR/pg_isready" -q -h "$SOCKET_DIR" -p "$PORT" \
    || die "the server does not answer on $SOCKET_DIR (log: $LOG)"

# ---------------------------------------------------------------- role, database
admin_sql <<EOF || die "could not create the role $ROLE and the database $DATABASE (log: $LOG)"
SELECT format('CREATE ROLE %I LOGIN CREATEDB', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE')
\gexec
ALTER ROLE $ROLE PASSWORD '$PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$DATABASE', '$ROLE')
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DATABASE')
\gexec
EOF

# The URL as it is printed, over TCP with the password, must work: checked here rather than by the first test.
URL="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DATABASE"
"$PSQL" -X -q -At -c 'SELECT 1' "$URL" >/dev/null 2>"$STATE_DIR/check.log" \
    || { cat "$STATE_DIR/check.log" >&2; die "cannot log in as $ROLE over 127.0.0.1:$PORT (log: $LOG)"; }

log "PostgreSQL $MAJOR ready in $(elapsed) s: database $DATABASE, role $ROLE (may create databases) on" \
    "127.0.0.1:$PORT; data and log in $STATE_DIR"
echo "export GAN_BENCH_POSTGRES_URL=$URL"
