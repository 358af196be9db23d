#!/bin/sh
# Relay load benchmark: memory per idle agent connection (plain and TLS), a
# fleet of agents at 1 Hz with dashboards at growing sizes (relay CPU, RSS,
# end-to-end latency), and TLS handshakes per second. Everything runs on
# loopback against a relay started here; examples/loadgen.rs is the client.
#
#   scripts/bench-relay.sh                 # full run, about 15 minutes
#   RUNS=1 FLEETS="1000 10000" MAX_FLEET=0 TLS_FLEET=0 scripts/bench-relay.sh
#   PATCH=1 scripts/bench-relay.sh         # the fleets on the lean wire
#
# Knobs (environment):
#   RUNS            runs per figure; the table shows medians (default 3)
#   FLEETS          fleet sizes at 1 Hz (default "1000 5000 10000")
#   MAX_FLEET       if the largest of FLEETS met the targets, search up to
#                   this for the largest fleet that does; 0 skips the search
#                   (default: what the fd limit allows)
#   SEARCH_STEPS    halvings of that search after MAX_FLEET itself (default 3)
#   SEARCH_RUNS     runs per search probe (default 1)
#   TLS_FLEET       a fleet size also run over wss://; 0 skips (default 10000)
#   DASHBOARDS      dashboards watching each fleet (default 10)
#   DURATION        measurement window per fleet run, seconds (default 20)
#   PATCH           1: the fleets' agents send the lean wire (loadgen
#                   --patch): one full `metrics` on connecting, then `patch`
#                   frames that the relay rebuilds into whole samples; the
#                   latency stamp rides in `processes` (default 0: full
#                   samples every second)
#   IDLE_AGENTS     idle connections for the memory figure (default 2000)
#   HANDSHAKE_SECONDS  length of each handshake run (default 10)
#   VSTATS_RELAY_BIN   the relay to measure (default: the release build)
#
# Prints Markdown tables for BENCHMARKS.md; the raw JSON of every run is
# kept in $OUT (default target/bench-relay).
#
# The relay is a plain `cargo build --release` (the size-tuned profile:
# opt-level "z", fat LTO), as shipped, not the musl artifact.
set -eu
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
FLEETS=${FLEETS:-"1000 5000 10000"}
DASHBOARDS=${DASHBOARDS:-10}
DURATION=${DURATION:-20}
PATCH=${PATCH:-0}
IDLE_AGENTS=${IDLE_AGENTS:-2000}
HANDSHAKE_SECONDS=${HANDSHAKE_SECONDS:-10}
TLS_FLEET=${TLS_FLEET:-10000}
SEARCH_STEPS=${SEARCH_STEPS:-3}
SEARCH_RUNS=${SEARCH_RUNS:-1}
OUT=${OUT:-target/bench-relay}
# Both processes raise their soft limit to this; leave room for the
# dashboards and a few files on each side.
fd_limit=$(awk '/^Max open files/ { print $5 }' /proc/self/limits)
[ "$fd_limit" = unlimited ] && fd_limit=65536
MAX_FLEET=${MAX_FLEET:-$((fd_limit - DASHBOARDS - 100))}
# The targets a fleet must meet (PROTOCOL and DESIGN: one relay holds a
# fleet of 10,000 with 10 dashboards).
TARGET_CPU=100 TARGET_P99_MS=50 TARGET_RSS_KIB=$((200 * 1024))

work=$(mktemp -d)
relay_pid=""
cleanup() {
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir -p "$OUT"
rm -f "$OUT"/*.json

cargo build --quiet --release --locked --bin vstats-relay --example loadgen
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
# VSTATS_RELAY_BIN: another relay to measure (an older build, say).
relay=${VSTATS_RELAY_BIN:-${CARGO_TARGET_DIR:-target}/release/vstats-relay}
loadgen=${CARGO_TARGET_DIR:-target}/release/examples/loadgen

biggest=$IDLE_AGENTS
for n in $FLEETS $MAX_FLEET $TLS_FLEET; do
    [ "$n" -gt "$biggest" ] && biggest=$n
done

# --- Registry -------------------------------------------------------------
# `server add` rewrites and fsyncs the whole state file each time, so
# registering 10,000 servers one by one costs minutes; time a few to say
# so, then write the state file directly (registry_material, state_file in
# bench-lib.sh).
add_ms() {
    state=$1 count=$2
    start=$(date +%s%N)
    i=0
    while [ "$i" -lt "$count" ]; do
        i=$((i + 1))
        "$relay" server add --name "timing-$i" --json --state "$state" >/dev/null
    done
    echo $((($(date +%s%N) - start) / count / 1000000))
}
add_empty_ms=$(add_ms "$work/timing.json" 100)

registry_material "$biggest"

# What one more `server add` costs on a registry of 10,000 (or of as many
# as this run uses, if fewer).
timing_servers=$((biggest < 10000 ? biggest : 10000))
state_file "$timing_servers"
cp "$work/state.json" "$work/timing.json"
add_full_ms=$(add_ms "$work/timing.json" 20)
rm -f "$work/timing.json" "$work/timing.json.lock"

# --- TLS material -----------------------------------------------------------
tls_material

# --- Relay ------------------------------------------------------------------
# start_relay plain|tls N: a fresh relay with N servers; sets relay_pid, url.
# warn, not info: info logs a line per agent connection.
start_relay() {
    state_file "$2"
    # Fresh means no history and no open alerts either: the last run's
    # relay saved them beside the state file at SIGTERM.
    rm -f "$work/state.history" "$work/state.alerts"
    launch_relay "$1" --state "$work/state.json" --log-level warn
}

# Each run also reports "other CPU".
QUIET_WAIT=${QUIET_WAIT:-30}

rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

# loadgen NAME ARGS...: runs the load generator against the current relay,
# keeps its JSON line in $OUT/NAME.json.
run_loadgen() {
    name=$1
    shift
    set -- --relay "$url" --tokens "$work/tokens" --relay-pid "$relay_pid" "$@"
    wait_quiet
    [ "${url#wss}" != "$url" ] && set -- "$@" --ca-file "$work/ca.pem"
    "$loadgen" "$@" >"$work/loadgen.out"
    tail -n 1 "$work/loadgen.out" >"$OUT/$name.json"
    sed '$d' "$work/loadgen.out" | sed 's/^/    /' >&2
}

# median KEY FILE...: the median of a field over runs.
median() {
    field "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN { if (v == "" || v == "null") print "n/a"; else printf "%.*f\n", d, v }'; }

# --- 1. Memory per idle connection ------------------------------------------
echo "memory per idle agent connection ($IDLE_AGENTS agents, $RUNS runs each)" >&2
for mode in plain tls; do
    r=1
    while [ "$r" -le "$RUNS" ]; do
        start_relay "$mode" "$IDLE_AGENTS"
        sleep 1
        before=$(rss_kib "$relay_pid")
        run_loadgen "idle-$mode-$r" --agents "$IDLE_AGENTS" --dashboards 0 --idle \
            --duration 3 --ramp "$(awk -v n="$IDLE_AGENTS" 'BEGIN { print n / 1000 }')"
        after=$(field relay_rss_kib "$OUT/idle-$mode-$r.json")
        connected=$(field agents_connected_at_end "$OUT/idle-$mode-$r.json")
        echo "{\"rss_before_kib\":$before,\"rss_after_kib\":$after,\"connected\":$connected,\"bytes_per_connection\":$(((after - before) * 1024 / connected))}" \
            >"$OUT/idle-$mode-$r.mem.json"
        stop_relay
        r=$((r + 1))
    done
done

# --- 2. Fleets at 1 Hz --------------------------------------------------------
# fleet MODE N RUNS: runs of N agents and the dashboards; returns 0 when the
# medians meet the targets.
fleet() {
    mode=$1 n=$2 runs=$3
    fleet_runs="$fleet_runs $mode-$n"
    echo "fleet: $n agents ($mode), $DASHBOARDS dashboards, 1 Hz" >&2
    r=1
    while [ "$r" -le "$runs" ]; do
        start_relay "$mode" "$n"
        # TLS set-up costs the relay far more than a plain upgrade: ramp
        # slower so the accept queue never overflows.
        if [ "$mode" = tls ]; then ramp=$((n / 500 + 1)); else ramp=$((n / 2000 + 1)); fi
        set -- --agents "$n" --dashboards "$DASHBOARDS" --rate 1 --ramp "$ramp" \
            --duration "$DURATION"
        [ "$PATCH" = 1 ] && set -- "$@" --patch
        run_loadgen "fleet-$mode-$n-$r" "$@"
        stop_relay
        r=$((r + 1))
    done
    set -- "$OUT"/fleet-"$mode"-"$n"-*.json
    cpu=$(median relay_cpu_percent "$@")
    p99=$(median p99 "$@")
    rss=$(median relay_rss_kib "$@")
    connected=$(median agents_connected_at_end "$@")
    awk -v c="$cpu" -v p="$p99" -v r="$rss" -v k="$connected" -v n="$n" \
        -v tc="$TARGET_CPU" -v tp="$TARGET_P99_MS" -v tr="$TARGET_RSS_KIB" \
        'BEGIN { exit !(c < tc && p < tp && r < tr && k == n) }'
}

passed="" fleet_runs=""
for n in $FLEETS; do
    if fleet plain "$n" "$RUNS"; then passed=$n; fi
done
# The largest fleet within the targets: try the most the fd limit allows,
# then halve the gap between the largest pass and the smallest failure,
# to the nearest 500 agents.
largest=$(echo "$FLEETS" | tr ' ' '\n' | sort -n | tail -n 1)
if [ "$MAX_FLEET" -gt "$largest" ] && [ "$passed" = "$largest" ]; then
    if fleet plain "$MAX_FLEET" "$SEARCH_RUNS"; then
        passed=$MAX_FLEET
    else
        failed=$MAX_FLEET step=0
        while [ "$step" -lt "$SEARCH_STEPS" ]; do
            step=$((step + 1))
            n=$(((passed + failed) / 2 / 500 * 500))
            [ "$n" -le "$passed" ] && break
            if fleet plain "$n" "$SEARCH_RUNS"; then passed=$n; else failed=$n; fi
        done
    fi
fi
if [ "$TLS_FLEET" -gt 0 ]; then
    fleet tls "$TLS_FLEET" "$RUNS" || true
fi

# --- 3. Handshakes per second -----------------------------------------------
echo "handshakes: $HANDSHAKE_SECONDS s each, 64 in flight" >&2
for mode in plain tls; do
    r=1
    while [ "$r" -le "$RUNS" ]; do
        # Every token registered: the generator cycles through them all.
        start_relay "$mode" "$biggest"
        run_loadgen "handshakes-$mode-$r" --agents 64 --handshakes "$HANDSHAKE_SECONDS"
        stop_relay
        r=$((r + 1))
    done
done

# --- Report -------------------------------------------------------------------
echo
lean=""
[ "$PATCH" = 1 ] && lean=" Fleet agents on the lean wire (one full sample, then patches; loadgen --patch)."
echo "Medians of $RUNS runs.$lean \`server add\`: $add_empty_ms ms each on an empty registry, $add_full_ms ms on one of $timing_servers."
echo
echo "| idle connections | relay RSS before | after | per connection |"
echo "|---|---|---|---|"
for mode in plain tls; do
    set -- "$OUT"/idle-"$mode"-*.mem.json
    echo "| $IDLE_AGENTS $mode | $(median rss_before_kib "$@") KiB | $(median rss_after_kib "$@") KiB | $(median bytes_per_connection "$@") bytes |"
done
echo
echo "| agents (1 Hz) | dashboards | relay CPU (% of a core) | relay RSS | p50 | p90 | p99 | max | delivered | loadgen CPU | other CPU |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for run in $fleet_runs; do
    set -- "$OUT"/fleet-"$run"-*.json
    mode=${run%-*}
    sent=$(median samples_sent_in_window "$@")
    got=$(median received_per_dashboard_min "$@")
    delivered=$(awk -v s="$sent" -v g="$got" 'BEGIN { if (s > 0) printf "%.2f %%", g / s * 100; else print "n/a" }')
    echo "| $(median agents_connected_at_end "$@") $mode | $(median dashboards_connected "$@") | $(fmt "$(median relay_cpu_percent "$@")") | $(fmt "$(awk -v k="$(median relay_rss_kib "$@")" 'BEGIN { print k / 1024 }')") MiB | $(fmt "$(median p50 "$@")" 2) ms | $(fmt "$(median p90 "$@")" 2) ms | $(fmt "$(median p99 "$@")" 2) ms | $(fmt "$(median max "$@")") ms | $delivered | $(fmt "$(median loadgen_cpu_percent "$@")") | $(fmt "$(median others_cpu_percent "$@")") |"
done
echo
echo "Largest plain fleet within the targets (CPU < 1 core, p99 < 50 ms, RSS < 200 MB): ${passed:-none} (search probes: $SEARCH_RUNS run each)."
echo
echo "| handshakes | per second | relay CPU (% of a core) | per relay CPU-second | loadgen CPU |"
echo "|---|---|---|---|---|"
for mode in plain tls; do
    set -- "$OUT"/handshakes-"$mode"-*.json
    echo "| $mode | $(fmt "$(median handshakes_per_s "$@")" 0) | $(fmt "$(median relay_cpu_percent "$@")") | $(fmt "$(median relay_handshakes_per_cpu_s "$@")" 0) | $(fmt "$(median loadgen_cpu_percent "$@")") |"
done
