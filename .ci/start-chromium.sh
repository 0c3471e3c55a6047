#!/usr/bin/env bash
# Make sure a headless Chromium is here for tests/test_report_browser.py (report.html rendered in a real browser):
# Debian's `chromium` (installed with apt-get if absent, with fonts-liberation so text renders as it would on a
# desktop), then checked by rendering a page headless. Starts no server: each test starts and stops its own browser.
#
# Idempotent: a browser already installed is only checked, so running it a second time takes a second or two.
#
# The LAST line of stdout is always `export GAN_BENCH_CHROMIUM=<path of the browser>`, so:
#     eval "$(.ci/start-chromium.sh | tail -1)"
# Progress messages go to stderr.
#
# Optional environment:
#   GAN_BENCH_CHROMIUM           a browser to use instead of Debian's (checked, not installed)
#   GAN_BENCH_CHROMIUM_TIMEOUT   seconds the check may take (default 60)
set -euo pipefail

TIMEOUT="${GAN_BENCH_CHROMIUM_TIMEOUT:-60}"

log() { echo "[start-chromium] $*" >&2; }
die() { echo "[start-chromium] ERROR: $*" >&2; exit 1; }

[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "GAN_BENCH_CHROMIUM_TIMEOUT must be a positive integer: $TIMEOUT"

T0=$(date +%s.%N)
elapsed() { awk -v t0="$T0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'; }

# ---------------------------------------------------------------- binary
# GAN_BENCH_CHROMIUM when set (it must work: no fallback that hides a wrong setting), else Debian's.
if [[ -n "${GAN_BENCH_CHROMIUM:-}" ]]; then
    [[ -f "$GAN_BENCH_CHROMIUM" && -x "$GAN_BENCH_CHROMIUM" ]] \
        || die "GAN_BENCH_CHROMIUM=$GAN_BENCH_CHROMIUM is not an executable file"
    BROWSER=$GAN_BENCH_CHROMIUM
elif [[ -x /usr/bin/chromium ]]; then
    BROWSER=/usr/bin/chromium
else
    [[ $(id -u) -eq 0 ]] || die "no Chromium here (/usr/bin/chromium), and only root can install it: apt-get install" \
        "chromium (or run this script as root, or set GAN_BENCH_CHROMIUM to a Chromium or Chrome)"
    log "installing Debian's chromium"
    # Chromium's security updates replace the package version often: stale package lists name a version the mirror
    # no longer has, so update them first (debian-install.sh would also retry after an update).
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/tmp/gan-bench-chromium-apt-update.log 2>&1 \
        || log "apt-get update failed (log: /tmp/gan-bench-chromium-apt-update.log); trying the package lists there are"
    "$(dirname "$0")/debian-install.sh" /tmp/gan-bench-chromium-apt.log chromium fonts-liberation \
        || die "could not install chromium"
    [[ -x /usr/bin/chromium ]] || die "chromium installed, but there is no /usr/bin/chromium"
    BROWSER=/usr/bin/chromium
    log "chromium installed ($(elapsed) s)"
fi

# ---------------------------------------------------------------- check
# The flags tests/browser.py starts it with: as root (CI) Chromium refuses to run without --no-sandbox, and there is
# no GPU. A page that writes its own text proves it renders and runs scripts, not only that it starts.
profile=$(mktemp -d /tmp/gan-bench-chromium-check.XXXXXX)
trap 'rm -rf "$profile"' EXIT
page='data:text/html,<title>x</title><script>document.write("gan-bench-" + "chromium-ok")</script>'
if ! dom=$(timeout "$TIMEOUT" "$BROWSER" --headless=new --no-sandbox --disable-gpu --no-first-run \
        --no-default-browser-check --user-data-dir="$profile" --dump-dom "$page" 2>"$profile/stderr"); then
    tail -20 "$profile/stderr" >&2
    die "$BROWSER could not render a page headless"
fi
[[ $dom == *gan-bench-chromium-ok* ]] || { tail -20 "$profile/stderr" >&2; die "$BROWSER rendered a page, but did not" \
    "run its script"; }

log "$("$BROWSER" --version 2>/dev/null | head -1) ready in $(elapsed) s ($BROWSER)"
echo "export GAN_BENCH_CHROMIUM=$BROWSER"
