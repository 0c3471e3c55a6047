#!/usr/bin/env bash
# Install Debian packages for the test servers (slurm/start-cluster.sh, .ci/start-postgres.sh) without starting the
# system-wide daemons their init scripts would start (no systemd here; those daemons are not ours and would take
# their ports): a policy-rc.d that forbids it, for the duration of the install. Retries once after `apt-get update`
# (a fresh machine's package lists are missing or stale). Packages already installed are skipped.
#
#   .ci/debian-install.sh LOG PACKAGE...     apt's output goes to LOG; on failure its tail goes to stderr, exit 1
set -euo pipefail

log_file=$1
shift
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "[debian-install] installing: ${missing[*]}" >&2

created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
trap '((created_policy)) && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log_file" 2>&1; then
    echo "[debian-install] apt-get install failed; running apt-get update and retrying" >&2
    apt-get update -qq >>"$log_file" 2>&1 || true
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log_file" 2>&1; then
        tail -20 "$log_file" >&2
        echo "[debian-install] ERROR: apt-get install ${missing[*]} failed (log: $log_file)" >&2
        exit 1
    fi
fi
