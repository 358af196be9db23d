#!/bin/sh
# Hostile peers against the relay: examples/probe.rs starts the release
# relay itself (pinned to CPU 1, the probe on CPU 0), runs one attack on it
# and measures what it costs: the relay's RSS before, at its peak and after,
# its CPU time, /healthz asked every 20 ms throughout (median and worst),
# the kernel's TCP memory, and what the attack got (messages dashboards
# received, close codes, HTTP statuses, vstats_relay_malformed_frames_total).
# One JSON line per run. The attacks (examples/probe.rs says more):
#
#   patch-oversize     one patch rebuilds a sample far past the 64 KiB limit
#                      while 3 dashboards watch; does a new one get its snapshot
#   patch-growth       1657 patches, each under 64 KiB, grow one sample
#   compat-preauth     2000 unauthenticated /compat/ws/agent sockets, each
#                      writing 900 KiB of an announced 1 MiB frame
#   compat-interfaces  vStats samples with 3600 interfaces: CPU per sample
#   metrics-slow       2000 agents, then 600 /metrics clients that never read
#
# Reproduce, on a machine with two CPUs or more and a few GB free (the relay
# before the fixes took 1.8 GB for compat-preauth):
#
#   scripts/bench-hostile.sh [ATTACK...]      # default: all five, 3 runs each
#   RUNS=1 scripts/bench-hostile.sh compat-preauth patch-oversize
#   VSTATS_RELAY_BIN=/path/to/vstats-relay scripts/bench-hostile.sh
#   PROBE_ARGS='--sources 200' scripts/bench-hostile.sh compat-preauth
#
# Without VSTATS_RELAY_BIN the relay is built from this checkout. To compare
# with an older relay, build it in a worktree of that commit
# (git worktree add ../old COMMIT && cargo build --release --bin vstats-relay
# there) and point VSTATS_RELAY_BIN at it.
set -eu
here=$PWD
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
if [ "$#" -eq 0 ]; then
    set -- patch-oversize patch-growth compat-preauth compat-interfaces metrics-slow
fi
target=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${VSTATS_RELAY_BIN:-}" ]; then
    cargo build --quiet --release --locked --bin vstats-relay
    VSTATS_RELAY_BIN=$target/release/vstats-relay
fi
case $VSTATS_RELAY_BIN in
    /*) ;;
    *) VSTATS_RELAY_BIN=$here/$VSTATS_RELAY_BIN ;;
esac
cargo build --quiet --release --locked --example probe
log=$(mktemp)
trap 'rm -f "$log"' EXIT
trap 'exit 130' INT TERM
status=0
for attack in "$@"; do
    i=0
    while [ "$i" -lt "$runs" ]; do
        i=$((i + 1))
        # PROBE_ARGS is a list of probe options: split on purpose.
        # shellcheck disable=SC2086
        if ! "$target/release/examples/probe" --relay-bin "$VSTATS_RELAY_BIN" \
            --attack "$attack" --json ${PROBE_ARGS:-} 2>"$log"; then
            echo "error: $attack, run $i failed:" >&2
            cat "$log" >&2
            status=1
        fi
    done
done
exit "$status"
