#!/usr/bin/env bash
# Start a real one-node SLURM cluster (slurmctld + slurmd + slurmdbd/MariaDB accounting + munge)
# on a Debian 12 machine, as root, without systemd.
#
# Everything (configs, munge key, MariaDB datadir, daemon state, PID files, logs) lives in ONE
# state directory: $GAN_BENCH_SLURM_DIR, default /var/tmp/gan-bench-slurm.
#
# Idempotent: daemons already running (checked by recorded PID) are left alone, so running it a
# second time is a no-op; after slurm/stop-cluster.sh it restarts in a few seconds.
#
# The LAST line of stdout is always `export SLURM_CONF=<state dir>/slurm.conf`, so:
#     eval "$(sudo slurm/start-cluster.sh | tail -1)"
# Progress messages go to stderr.
#
# Optional environment:
#   GAN_BENCH_SLURM_DIR       state directory (default /var/tmp/gan-bench-slurm)
#   GAN_BENCH_SLURM_CPUS      CPUs declared for the node (default 8, may exceed the real count)
#   GAN_BENCH_SLURM_TIMEOUT   seconds to wait for each daemon / the node (default 60)
set -euo pipefail

STATE_DIR="${GAN_BENCH_SLURM_DIR:-/var/tmp/gan-bench-slurm}"
CPUS="${GAN_BENCH_SLURM_CPUS:-8}"
TIMEOUT="${GAN_BENCH_SLURM_TIMEOUT:-60}"
CLUSTER=ganbench
ACCOUNT=gan-bench
CTLD_PORT=6817
SLURMD_PORT=6818
DBD_PORT=6819
MYSQL_PORT=6820
CRED_EXPIRE=10

log() { echo "[start-cluster] $*" >&2; }
die() { echo "[start-cluster] ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0)"
case "$STATE_DIR" in /*) ;; *) die "GAN_BENCH_SLURM_DIR must be an absolute path: $STATE_DIR";; esac
[[ "$CPUS" =~ ^[1-9][0-9]*$ ]] || die "GAN_BENCH_SLURM_CPUS must be a positive integer: $CPUS"

T0=$(date +%s.%N)
elapsed() { awk -v t0="$T0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'; }

# ---------------------------------------------------------------- packages
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client)
"$(dirname "$0")/../.ci/debian-install.sh" /tmp/gan-bench-slurm-apt.log "${PACKAGES[@]}" || die "could not install ${PACKAGES[*]}"
for b in munged mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sbatch sinfo sacctmgr scontrol; do
    command -v "$b" >/dev/null || [[ -x /usr/sbin/$b ]] || die "missing program after install: $b"
done
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------- layout
MUNGE_DIR="$STATE_DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
MYSQL_DIR="$STATE_DIR/mariadb"
MYSQL_DATA="$MYSQL_DIR/data"
MYSQL_SOCKET="$MYSQL_DIR/mariadbd.sock"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/log"
SPOOL_DIR="$STATE_DIR/spool"
SLURM_CONF="$STATE_DIR/slurm.conf"
DBD_CONF="$STATE_DIR/slurmdbd.conf"
CGROUP_CONF="$STATE_DIR/cgroup.conf"
NODE="$(hostname -s)"
[[ -n "$NODE" ]] || die "hostname -s is empty"
export SLURM_CONF

mkdir -p "$STATE_DIR" "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR/slurmctld" "$SPOOL_DIR/slurmd" "$MUNGE_DIR" "$MYSQL_DIR"
chmod 755 "$STATE_DIR" "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR"
chmod 700 "$SPOOL_DIR/slurmctld" "$SPOOL_DIR/slurmd"
chown munge:munge "$MUNGE_DIR"
chmod 0711 "$MUNGE_DIR"    # clients must reach the socket; munged refuses insecure dirs
chown mysql:mysql "$MYSQL_DIR"
chmod 0750 "$MYSQL_DIR"

# ---------------------------------------------------------------- helpers
# pid_alive FILE NAME: the PID recorded in FILE is running (not a zombie) and is program NAME.
pid_alive() {
    local f=$1 name=$2 pid
    [[ -s "$f" ]] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [[ -n "$pid" && -d /proc/$pid ]] || return 1
    [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$name" ]] || return 1
    # an exited daemon can linger as a zombie until init reaps it
    [[ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" != Z ]]
}
# require_free_port PORT DAEMON: die if something else already listens on 127.0.0.1:PORT / *:PORT.
require_free_port() {
    command -v ss >/dev/null || return 0
    if [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; then
        die "port $1 (for $2) is already in use: is another cluster running (another" \
            "GAN_BENCH_SLURM_DIR, or a system $2)? Stop it first."
    fi
}
# wait_for DESCRIPTION COMMAND...: retry COMMAND every 0.2 s until it succeeds or TIMEOUT.
wait_for() {
    local what=$1; shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
# write_if_changed FILE MODE: stdin to FILE, unless FILE already has that content.
write_if_changed() {
    local f=$1 mode=$2 tmp
    tmp=$(mktemp "$f.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f "$f" ]] && cmp -s "$tmp" "$f"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$f"
    fi
}

STARTED=0   # daemons started by this run

# Fail early if a daemon we must start would find its port taken (e.g. a cluster of another
# state directory is running: ports are fixed, so only one cluster per machine).
pid_alive "$MYSQL_DIR/mariadbd.pid" mariadbd || require_free_port "$MYSQL_PORT" mariadbd
pid_alive "$RUN_DIR/slurmdbd.pid" slurmdbd || require_free_port "$DBD_PORT" slurmdbd
pid_alive "$RUN_DIR/slurmctld.pid" slurmctld || require_free_port "$CTLD_PORT" slurmctld
pid_alive "$RUN_DIR/slurmd.pid" slurmd || require_free_port "$SLURMD_PORT" slurmd

# ---------------------------------------------------------------- configs
# Munge key (kept across restarts).
if [[ ! -s "$MUNGE_DIR/munge.key" ]]; then
    log "creating munge key"
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
fi
chown munge:munge "$MUNGE_DIR/munge.key"
chmod 0400 "$MUNGE_DIR/munge.key"

# Accounting DB password (kept across restarts in slurmdbd.conf).
DB_PASS=""
[[ -f "$DBD_CONF" ]] && DB_PASS=$(sed -n 's/^StoragePass=//p' "$DBD_CONF")
[[ -n "$DB_PASS" ]] || DB_PASS=$(head -c 48 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 24)

# Memory: what slurmd sees, minus a margin (10%, at least 512 MB).
REAL_MEM=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
[[ -n "$REAL_MEM" ]] || die "could not read RealMemory from 'slurmd -C'"
margin=$((REAL_MEM / 10)); ((margin >= 512)) || margin=512
MEM=$((REAL_MEM - margin)); ((MEM >= 256)) || MEM=$REAL_MEM
DEF_MEM_PER_CPU=$((MEM / CPUS))

write_if_changed "$SLURM_CONF" 644 <<EOF
# Generated by gan-bench slurm/start-cluster.sh -- a one-node test cluster. Edits are overwritten.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$CRED_EXPIRE
StateSaveLocation=$SPOOL_DIR/slurmctld
SlurmdSpoolDir=$SPOOL_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
# No cgroups on this machine: memory limits are NOT enforced.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=5
SlurmdParameters=config_overrides
ReturnToService=2
InactiveLimit=0
KillWait=10
MinJobAge=300
JobRequeue=1
# Accounting (submitit needs it to see cancelled/timed-out jobs as finished).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=long Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF

write_if_changed "$DBD_CONF" 600 <<EOF
# Generated by gan-bench slurm/start-cluster.sh. Edits are overwritten.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chown root:root "$DBD_CONF"

# Not read with proctrack/linuxproc + task/none; written so the directory is complete.
write_if_changed "$CGROUP_CONF" 644 <<EOF
# Generated by gan-bench slurm/start-cluster.sh. Unused: slurm.conf uses proctrack/linuxproc and
# task/none because this machine has no usable cgroups (memory limits are not enforced).
ConstrainCores=no
ConstrainRAMSpace=no
EOF

# ---------------------------------------------------------------- munged
if pid_alive "$MUNGE_DIR/munged.pid" munged; then
    log "munged already running (pid $(cat "$MUNGE_DIR/munged.pid"))"
else
    log "starting munged"; STARTED=1
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" \
        || die "munged failed to start (log: $MUNGE_DIR/munged.log)"
    wait_for munged bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'" \
        || die "munged does not answer (log: $MUNGE_DIR/munged.log)"
fi
ln -sf "$MUNGE_DIR/munged.log" "$LOG_DIR/munged.log"

# ---------------------------------------------------------------- mariadbd
if pid_alive "$MYSQL_DIR/mariadbd.pid" mariadbd; then
    log "mariadbd already running (pid $(cat "$MYSQL_DIR/mariadbd.pid"))"
else
    if [[ ! -d "$MYSQL_DATA/mysql" ]]; then
        log "initialising the MariaDB datadir"
        rm -rf "$MYSQL_DATA"
        mariadb-install-db --no-defaults --user=mysql --basedir=/usr --datadir="$MYSQL_DATA" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$LOG_DIR/mariadb-install-db.log" 2>&1 \
            || die "mariadb-install-db failed (log: $LOG_DIR/mariadb-install-db.log)"
    fi
    log "starting mariadbd (127.0.0.1:$MYSQL_PORT)"; STARTED=1
    rm -f "$MYSQL_SOCKET"
    setsid mariadbd --no-defaults --user=mysql --basedir=/usr --datadir="$MYSQL_DATA" \
        --socket="$MYSQL_SOCKET" --pid-file="$MYSQL_DIR/mariadbd.pid" \
        --log-error="$LOG_DIR/mariadbd.log" --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
        --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-log-file-size=48M \
        --innodb-lock-wait-timeout=900 --max-allowed-packet=16M \
        </dev/null >>"$LOG_DIR/mariadbd.log" 2>&1 &
    wait_for mariadbd mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot -e 'SELECT 1' \
        || die "mariadbd does not answer (log: $LOG_DIR/mariadbd.log)"
fi
mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot <<EOF || die "could not create the accounting database"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF

# ---------------------------------------------------------------- slurmdbd
if pid_alive "$RUN_DIR/slurmdbd.pid" slurmdbd; then
    log "slurmdbd already running (pid $(cat "$RUN_DIR/slurmdbd.pid"))"
else
    log "starting slurmdbd"; STARTED=1
    SLURMDBD_CONF="$DBD_CONF" slurmdbd || die "slurmdbd failed to start (log: $LOG_DIR/slurmdbd.log)"
fi
# sacctmgr talks to slurmdbd directly: it answers once slurmdbd has set up its tables.
wait_for slurmdbd sacctmgr -n -P show cluster format=cluster \
    || die "slurmdbd does not answer (log: $LOG_DIR/slurmdbd.log)"
if ! sacctmgr -n -P show cluster format=cluster | grep -x "$CLUSTER" >/dev/null; then
    log "registering cluster '$CLUSTER' in accounting"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# ---------------------------------------------------------------- slurmctld, slurmd
if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld; then
    log "slurmctld already running (pid $(cat "$RUN_DIR/slurmctld.pid"))"
else
    log "starting slurmctld"; STARTED=1
    ctld_log_offset=$(stat -c %s "$LOG_DIR/slurmctld.log" 2>/dev/null || echo 0)
    slurmctld || die "slurmctld failed to start (log: $LOG_DIR/slurmctld.log)"
fi
wait_for slurmctld scontrol ping || die "slurmctld does not answer (log: $LOG_DIR/slurmctld.log)"

if pid_alive "$RUN_DIR/slurmd.pid" slurmd; then
    log "slurmd already running (pid $(cat "$RUN_DIR/slurmd.pid"))"
else
    log "starting slurmd (node $NODE, $CPUS CPUs, ${MEM} MB)"; STARTED=1
    slurmd -N "$NODE" || die "slurmd failed to start (log: $LOG_DIR/slurmd.log)"
fi

# Remember which configuration the running daemons read; warn when it has changed since.
config_sum=$(cat "$SLURM_CONF" "$DBD_CONF" | sha256sum | cut -d' ' -f1)
if ((STARTED)); then
    echo "$config_sum" >"$RUN_DIR/config.sha256"
elif [[ "$(cat "$RUN_DIR/config.sha256" 2>/dev/null)" != "$config_sum" ]]; then
    log "WARNING: the configuration changed since the daemons started; they still use the old" \
        "one: run slurm/stop-cluster.sh, then this script again"
fi

# ---------------------------------------------------------------- account
if ! sacctmgr -n -P show account "$ACCOUNT" format=account | grep -x "$ACCOUNT" >/dev/null; then
    log "adding account '$ACCOUNT' and user root to it"
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="gan-bench tests" \
        Organization=gan-bench >/dev/null
fi
if ! sacctmgr -n -P show user root withassoc format=account | grep -x "$ACCOUNT" >/dev/null; then
    sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
fi

# ---------------------------------------------------------------- wait for the node
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1; }
node_ready() { [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]; }
resumed=0
deadline=$((SECONDS + TIMEOUT))
until node_ready; do
    state=$(node_state)
    if ((!resumed)) && [[ "$state" =~ (down|drain|fail) ]] && pid_alive "$RUN_DIR/slurmd.pid" slurmd; then
        sleep 2
        if ! node_ready; then
            log "node is '$state'; resuming it"
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
            resumed=1
        fi
        continue
    fi
    ((SECONDS < deadline)) || die "node $NODE not ready (state '$state'; logs in $LOG_DIR)"
    sleep 0.2
done

# A freshly started slurmctld runs its first scheduling pass a few seconds after start-up; jobs
# submitted before it wait. Wait for it (its log shows SchedulerParameters=...), so that "ready"
# means that a job submitted now starts at once.
if [[ -n "${ctld_log_offset:-}" ]]; then
    first_pass() { tail -c +"$((ctld_log_offset + 1))" "$LOG_DIR/slurmctld.log" | grep "SchedulerParameters=" >/dev/null; }
    wait_for scheduler first_pass || log "WARNING: no scheduling pass seen in $LOG_DIR/slurmctld.log yet"
fi

log "cluster '$CLUSTER' ready in $(elapsed) s: node $NODE ($(node_state), $CPUS CPUs, ${MEM} MB)," \
    "partitions debug (default) and long; logs in $LOG_DIR"
echo "export SLURM_CONF=$SLURM_CONF"
