#!/bin/sh
# Dashboards that never read: a fleet of agents at 1 Hz keeps sending while
# DEAF dashboards connect to /ws, finish the upgrade and then never read a
# byte (no frames, no pongs: the sockets are simply held open). Prints the
# relay's RSS before they come, its peak, at AT seconds after they came, and
# when the relay had let go of all of them (its vstats_relay_connections
# gauge, from /metrics, once a second). examples/loadgen.rs
# (--deaf-dashboards) is the client; everything runs on loopback.
#
#   scripts/bench-deaf.sh                  # ws:// and wss://, one run each
#   VSTATS_RELAY_BIN=/path/to/vstats-relay LABEL=old scripts/bench-deaf.sh
#   RUNS=3 MODES=plain scripts/bench-deaf.sh
#
# Knobs (environment):
#   VSTATS_RELAY_BIN  the relay under test (default: a release build of this
#                     tree, built here)
#   LOADGEN           the load generator (default: built here)
#   LABEL             what the table calls the relay (default: its path)
#   MODES             "plain tls" (default), or one of them
#   RUNS              runs per mode; the table shows medians (default 1)
#   AGENTS            agents (default 100), RATE samples a second each
#                     (default 1), SAMPLE_BYTES each (default 1000)
#   DASHBOARDS        reading dashboards alongside, timed (default 2)
#   DEAF              dashboards that never read (default 1000)
#   DURATION          seconds watched from the first deaf connect (default 90)
#   AT                the seconds whose RSS the table shows (default "30 90")
#   QUIET_WAIT        wait at most this long for a quiet machine (default 30)
#
# The raw output of every run is kept in $OUT (default target/bench-deaf).
set -eu
cd "$(dirname "$0")/.."

MODES=${MODES:-"plain tls"}
RUNS=${RUNS:-1}
AGENTS=${AGENTS:-100}
RATE=${RATE:-1}
SAMPLE_BYTES=${SAMPLE_BYTES:-1000}
DASHBOARDS=${DASHBOARDS:-2}
DEAF=${DEAF:-1000}
DURATION=${DURATION:-90}
AT=${AT:-"30 90"}
QUIET_WAIT=${QUIET_WAIT:-30}
OUT=${OUT:-target/bench-deaf}

if [ -z "${VSTATS_RELAY_BIN:-}" ]; then
    cargo build --quiet --release --locked --bin vstats-relay
    VSTATS_RELAY_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/vstats-relay
fi
if [ -z "${LOADGEN:-}" ]; then
    cargo build --quiet --release --locked --example loadgen
    LOADGEN=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/loadgen
fi
relay=$VSTATS_RELAY_BIN
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
LABEL=${LABEL:-$relay}
# The label, as a file name for this relay's runs.
tag=$(printf %s "$LABEL" | tr -c 'A-Za-z0-9._-' _)

# Every socket is a file on each side: the deaf dashboards, the agents, the
# reading dashboards, and room for the relay's own files and /metrics. Both
# processes raise their soft open-files limit to the hard one.
need=$((DEAF + AGENTS + DASHBOARDS + 100))
fd_limit=$(awk '/^Max open files/ { print $5 }' /proc/self/limits)
if [ "$fd_limit" != unlimited ] && [ "$fd_limit" -lt "$need" ]; then
    echo "error: the hard open-files limit ($fd_limit) is below the $need sockets needed on each side" >&2
    exit 1
fi

work=$(mktemp -d)
relay_pid=""
cleanup() {
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir -p "$OUT"
rm -f "$OUT/$tag"-*

# --- Registry: AGENTS servers, added as an operator would ---------------------
i=0
while [ "$i" -lt "$AGENTS" ]; do
    i=$((i + 1))
    "$relay" server add --name "bench-$i" --json --state "$work/state.json" |
        sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p' >>"$work/tokens"
done
if [ "$(wc -l <"$work/tokens")" -ne "$AGENTS" ]; then
    echo "error: server add did not print a token for each server" >&2
    exit 1
fi

# --- TLS material -------------------------------------------------------------
tls_material

# start_relay plain|tls: a relay on a fresh copy of the registry; sets
# relay_pid and url.
start_relay() {
    cp "$work/state.json" "$work/run-state.json"
    : >"$work/relay.log"
    launch_relay "$mode" --state "$work/run-state.json" --log-level warn
}

# rss_at SECONDS FILE: the relay's RSS at the first probe at or after then.
rss_at() {
    awk -v at="$1" '
        $1 == "deaf" {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            if (v["t"] >= at - 0.5) { print v["rss_kib"]; exit }
        }' "$2"
}

# median: of the numbers on stdin ("null" and "n/a" lines left out).
median() {
    grep -E '^[-0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

mib() { awk -v k="$1" 'BEGIN { if (k == "") print "n/a"; else printf "%.1f MiB\n", k / 1024 }'; }
secs() { awk -v s="$1" 'BEGIN { if (s == "") print "never"; else printf "%.0f s\n", s }'; }

for mode in $MODES; do
    r=1
    while [ "$r" -le "$RUNS" ]; do
        name="$tag-$mode-$r"
        echo "$LABEL, $mode, run $r: $AGENTS agents at $RATE Hz ($SAMPLE_BYTES-byte samples), $DASHBOARDS reading and $DEAF deaf dashboards, $DURATION s" >&2
        start_relay
        sleep 1
        wait_quiet
        set -- --relay "$url" --tokens "$work/tokens" --relay-pid "$relay_pid" \
            --agents "$AGENTS" --rate "$RATE" --sample-bytes "$SAMPLE_BYTES" \
            --dashboards "$DASHBOARDS" --deaf-dashboards "$DEAF" --duration "$DURATION"
        [ "$mode" = tls ] && set -- "$@" --ca-file "$work/ca.pem"
        "$LOADGEN" "$@" >"$OUT/$name.txt"
        sed '$d' "$OUT/$name.txt" | sed 's/^/    /' >&2
        stop_relay
        cp "$work/relay.log" "$OUT/$name.relay.log"
        r=$((r + 1))
    done
done

# --- Report -------------------------------------------------------------------
echo
echo "$AGENTS agents at $RATE Hz with $SAMPLE_BYTES-byte samples, $DASHBOARDS reading dashboards, $DEAF dashboards that never read, watched for $DURATION s from their first connect; medians of $RUNS run(s)."
echo
printf '| relay | scheme | RSS before | peak (1 s probes) | peak at | VmHWM'
for at in $AT; do printf ' | RSS at %s s' "$at"; done
printf ' | all deaf gone at | reading dashboards p99 | delivered | TCP memory peak (machine) |\n'
printf '|---|---|---|---|---|---'
for at in $AT; do printf '|---'; done
printf '|---|---|---|---|\n'
for mode in $MODES; do
    runs=$(printf '%s\n' "$OUT/$tag-$mode"-*.txt)
    # shellcheck disable=SC2086 # one file name a word
    col() { for f in $runs; do tail -n 1 "$f" | field "$1"; done | median; }
    printf '| %s | %s | %s | %s | %s | %s' "$LABEL" "$([ "$mode" = tls ] && echo wss:// || echo ws://)" \
        "$(mib "$(col relay_rss_before_kib)")" "$(mib "$(col relay_rss_peak_kib)")" \
        "$(secs "$(col relay_rss_peak_at_s)")" "$(mib "$(col relay_hwm_kib)")"
    for at in $AT; do
        printf ' | %s' "$(mib "$(for f in $runs; do rss_at "$at" "$f"; done | median)")"
    done
    # A run in which some stayed counts as "never" (above every time).
    gone=$(for f in $runs; do
        v=$(tail -n 1 "$f" | field deaf_all_gone_at_s)
        [ "$v" = null ] && v=999999
        echo "$v"
    done | median)
    [ "$gone" = 999999 ] && gone=""
    p99=$(for f in $runs; do tail -n 1 "$f" | sed -n 's/.*"p99":\([-0-9.e+a-z]*\).*/\1/p'; done | median)
    delivered=$(for f in $runs; do
        awk -v s="$(tail -n 1 "$f" | field samples_sent_in_window)" \
            -v g="$(tail -n 1 "$f" | field received_per_dashboard_min)" \
            'BEGIN { if (s > 0) printf "%.2f\n", g / s * 100 }'
    done | median)
    printf ' | %s | %s | %s | %s |\n' "$(secs "$gone")" \
        "$(awk -v p="$p99" 'BEGIN { if (p == "") print "n/a"; else printf "%.2f ms\n", p }')" \
        "${delivered:-n/a} %" "$(mib "$(col tcp_mem_peak_kib)")"
done
