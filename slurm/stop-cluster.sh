#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by slurm/start-cluster.sh.
#
#   slurm/stop-cluster.sh            stop slurmd, slurmctld, slurmdbd, mariadbd, munged (by the PIDs
#                                    recorded in the state dir); configs, accounting DB and job
#                                    state are kept so the next start takes a few seconds
#   slurm/stop-cluster.sh --purge    also cancel all jobs first and remove the state directory
#
# Environment: GAN_BENCH_SLURM_DIR (default /var/tmp/gan-bench-slurm), as for start-cluster.sh.
set -euo pipefail

STATE_DIR="${GAN_BENCH_SLURM_DIR:-/var/tmp/gan-bench-slurm}"
PURGE=0
for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
    esac
done

log() { echo "[stop-cluster] $*" >&2; }
die() { echo "[stop-cluster] ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0)"
case "$STATE_DIR" in /*) ;; *) die "GAN_BENCH_SLURM_DIR must be an absolute path: $STATE_DIR";; esac
export PATH="$PATH:/usr/sbin:/sbin"

if [[ ! -d "$STATE_DIR" ]]; then
    log "no state directory $STATE_DIR: nothing to stop"
    exit 0
fi
export SLURM_CONF="$STATE_DIR/slurm.conf"

# recorded_pid FILE NAME: print the PID in FILE if that process is alive and is program NAME.
recorded_pid() {
    local f=$1 name=$2 pid
    [[ -s "$f" ]] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [[ -n "$pid" && -d /proc/$pid ]] || return 1
    [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$name" ]] || return 1
    [[ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" != Z ]] || return 1   # exited, not reaped
    echo "$pid"
}

# stop NAME PIDFILE: SIGTERM, wait up to 30 s, then SIGKILL.
stop() {
    local name=$1 f=$2 pid i
    if ! pid=$(recorded_pid "$f" "$name"); then
        log "$name not running"
        rm -f "$f"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        [[ -d /proc/$pid && "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$name" ]] || break
        # a zombie has exited
        [[ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" == Z ]] && break
        sleep 0.2
    done
    if [[ -d /proc/$pid && "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$name" ]] \
        && [[ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" != Z ]]; then
        log "$name (pid $pid) did not exit after 30 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$f"
}

if ((PURGE)) && recorded_pid "$STATE_DIR/run/slurmctld.pid" slurmctld >/dev/null; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ' || true)
    if [[ -n "${jobs// /}" ]]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for ((i = 0; i < 75; i++)); do
            [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
            sleep 0.2
        done
    fi
fi

stop slurmd "$STATE_DIR/run/slurmd.pid"
stop slurmctld "$STATE_DIR/run/slurmctld.pid"
stop slurmdbd "$STATE_DIR/run/slurmdbd.pid"
stop mariadbd "$STATE_DIR/mariadb/mariadbd.pid"
stop munged "$STATE_DIR/munge/munged.pid"

if ((PURGE)); then
    log "removing $STATE_DIR"
    rm -rf -- "$STATE_DIR"
fi
log "stopped"
