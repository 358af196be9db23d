#!/bin/sh
# Idle relay benchmark: how often a relay that has nothing to do wakes up,
# and what that costs. Each measurement starts a fresh relay on loopback
# with a registry of AGENTS servers and measures it for WINDOW seconds
# twice over: with nothing connected, and with AGENTS agents connected that
# send nothing (examples/loadgen.rs --idle), plus DASHBOARDS dashboards.
# Reported for the relay process, over the window:
#
#   wake-ups/s   the rise of voluntary_ctxt_switches + nonvoluntary_ctxt_switches
#                of the relay's event-loop thread (/proc/PID/status) over the
#                window, per second: each return from a sleeping epoll_wait is
#                one voluntary switch
#   epoll_wait/s a cross-check: `strace -c -f` counts the relay's epoll_wait
#                (and epoll_pwait) calls for STRACE_SECONDS right after the
#                window (never during it: ptrace stops are context switches
#                too); n/a without strace or when ptrace is not permitted
#   CPU          utime + stime of every thread (/proc/PID/stat) over the
#                window, as % of one core and as ms per second; clock ticks,
#                so 1/CLK_TCK s (10 ms) is the grain over the whole window
#   on-CPU       the same from the scheduler's nanosecond clock (the sum of
#                /proc/PID/task/*/schedstat), in µs per second: an idle relay
#                uses far less than a tick per window
#   RSS          VmRSS at the end of the window
#
# The agents connect first and the window starts only once the relay's
# /metrics counts all of them (and the dashboards), SETTLE seconds have
# passed and the machine is quiet (wait_quiet, at most QUIET_WAIT seconds).
# The relay runs alone on CPU 1 and the load generator on CPU 0 (taskset,
# when there is one and at least two CPUs), as in bench-flood.sh.
#
#   scripts/bench-idle.sh                  # 1000 agents, 60 s windows, 3 runs
#   AGENTS=200 WINDOW=10 RUNS=1 scripts/bench-idle.sh
#   VSTATS_RELAY_BINS="before:/tmp/old/vstats-relay after:target/release/vstats-relay" \
#       scripts/bench-idle.sh              # two relays, alternately, one table
#
# Knobs (environment):
#   AGENTS          idle agent connections (default 1000); the "0 agents"
#                   case is always measured too, on the same registry
#   DASHBOARDS      dashboards connected beside the agents (default 0)
#   WINDOW          measurement window, seconds (default 60); keep it under
#                   the relay's 75 s silence limit unless the agents answer
#                   pings
#   RUNS            runs per figure; the table shows medians (default 3)
#   SETTLE          seconds between all connected and the window (default 2)
#   STRACE_SECONDS  length of the strace cross-check; 0 skips it (default 20)
#   QUIET_WAIT      longest wait for a quiet machine, seconds (default 30)
#   VSTATS_RELAY_BIN   the relay to measure (default: the release build,
#                   built here)
#   VSTATS_RELAY_BINS  several relays as LABEL:PATH, space-separated: run
#                   alternately (run 1 of each, then run 2 of each, ...) and
#                   shown as a column each; overrides VSTATS_RELAY_BIN
#   LOADGEN_BIN     the load generator (default: examples/loadgen, built here)
#   OUT             where the raw figures go (default target/bench-idle)
#
# Prints a Markdown table for BENCHMARKS.md; every measurement's figures
# (one JSON line), the load generator's output and the strace summaries are
# kept in $OUT.
set -eu
cd "$(dirname "$0")/.."

AGENTS=${AGENTS:-1000}
DASHBOARDS=${DASHBOARDS:-0}
WINDOW=${WINDOW:-60}
RUNS=${RUNS:-3}
SETTLE=${SETTLE:-2}
STRACE_SECONDS=${STRACE_SECONDS:-20}
QUIET_WAIT=${QUIET_WAIT:-30}
OUT=${OUT:-target/bench-idle}

work=$(mktemp -d)
relay_pid="" loadgen_pid=""
cleanup() {
    if [ -n "$loadgen_pid" ]; then kill "$loadgen_pid" 2>/dev/null || true; fi
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.loadgen.out "$OUT"/*.strace.txt

# --- Binaries -------------------------------------------------------------------
target=${CARGO_TARGET_DIR:-target}
relays=${VSTATS_RELAY_BINS:-}
build=""
if [ -z "$relays" ]; then
    if [ -n "${VSTATS_RELAY_BIN:-}" ]; then
        relays="relay:$VSTATS_RELAY_BIN"
    else
        relays="relay:$target/release/vstats-relay"
        build="--bin vstats-relay"
    fi
fi
loadgen=${LOADGEN_BIN:-}
if [ -z "$loadgen" ]; then
    loadgen=$target/release/examples/loadgen
    if [ "$AGENTS" -gt 0 ] || [ "$DASHBOARDS" -gt 0 ]; then
        build="$build --example loadgen"
    fi
fi
if [ -n "$build" ]; then
    # shellcheck disable=SC2086 # $build is a list of cargo arguments
    cargo build --quiet --release --locked $build
fi
labels=""
for spec in $relays; do
    label=${spec%%:*} bin=${spec#*:}
    case $label in
    "" | *[!A-Za-z0-9._-]*)
        echo "error: '$spec': want LABEL:PATH, LABEL of letters, digits, . _ -" >&2
        exit 1
        ;;
    esac
    case " $labels " in *" $label "*)
        echo "error: the label $label is given twice" >&2
        exit 1
        ;;
    esac
    if [ ! -x "$bin" ]; then
        echo "error: $bin (for $label) is not an executable" >&2
        exit 1
    fi
    labels="$labels $label"
done
labels=${labels# }
# bin_of LABEL: the path given for LABEL.
bin_of() {
    for spec in $relays; do
        [ "${spec%%:*}" = "$1" ] && echo "${spec#*:}" && return
    done
}
if { [ "$AGENTS" -gt 0 ] || [ "$DASHBOARDS" -gt 0 ]; } && [ ! -x "$loadgen" ]; then
    echo "error: the load generator $loadgen is not an executable" >&2
    exit 1
fi

# shellcheck source=scripts/bench-lib.sh disable=SC1091 # followed with -x
. scripts/bench-lib.sh

# --- Pinning ----------------------------------------------------------------------
pin_relay_apart

use_strace=0
if [ "$STRACE_SECONDS" -gt 0 ]; then
    if command -v strace >/dev/null 2>&1; then
        use_strace=1
    else
        echo "(no strace: the epoll_wait cross-check is skipped)" >&2
    fi
fi

# --- Registry ---------------------------------------------------------------------
registry_material $((AGENTS > 0 ? AGENTS : 1))
state_file "$AGENTS"
cp "$work/state.json" "$work/registry.json"

# --- Helpers ----------------------------------------------------------------------
# gauge KIND: the relay's count of open connections of KIND (agent,
# dashboard) from /metrics; empty if it does not answer.
gauge() {
    kind=$1
    # shellcheck disable=SC2154 # $url is launch_relay's (bench-lib.sh)
    set -- -s --max-time 5 "http://${url#ws://}/metrics"
    if [ -n "${VSTATS_VIEWER_TOKEN:-}" ]; then
        set -- "$@" -H "Authorization: Bearer $VSTATS_VIEWER_TOKEN"
    fi
    curl "$@" | awk -v k="vstats_relay_connections{kind=\"$kind\"}" '$1 == k { print $2 }'
}

# snapshot: the relay's counters now, as "ns switches ticks runtime_ns
# voluntary nonvoluntary": switches and their parts are the event loop's
# (the main thread's /proc/PID/status), ticks (utime + stime) and the
# scheduler's runtime are the whole process's.
snapshot() {
    now=$(date +%s%N)
    vol=$(awk '$1 == "voluntary_ctxt_switches:" { print $2 }' "/proc/$relay_pid/status")
    nonvol=$(awk '$1 == "nonvoluntary_ctxt_switches:" { print $2 }' "/proc/$relay_pid/status")
    # After "pid (comm) ", utime and stime are the 12th and 13th fields.
    ticks=$(sed 's/.*) //' "/proc/$relay_pid/stat" | awk '{ print $12 + $13 }')
    runtime=$(cat "/proc/$relay_pid"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }')
    echo "$now $((vol + nonvol)) $ticks $runtime $vol $nonvol"
}

rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

# epoll_per_s FILE: epoll_wait and epoll_pwait calls a second from the
# `strace -c` summary in FILE, or null.
epoll_per_s() {
    awk -v s="$STRACE_SECONDS" '$NF ~ /^epoll_p?wait2?$/ { n += $4; seen = 1 }
        END { if (seen) printf "%.3f\n", n / s; else print "null" }' "$1"
}

# measure LABEL N RUN: one measurement of relay LABEL with N idle agents,
# its figures as one JSON line in $OUT/LABEL-N-RUN.json.
measure() {
    label=$1 n=$2 run=$3
    name=$label-$n-$run
    dashboards=$DASHBOARDS
    [ "$n" -eq 0 ] && dashboards=0
    echo "$label: $n agents, $dashboards dashboards, run $run" >&2
    cp "$work/registry.json" "$work/state.json"
    rm -f "$work/state.history" "$work/state.alerts"
    PINNED_RELAY=$(bin_of "$label")
    export PINNED_RELAY
    launch_relay plain --state "$work/state.json" --log-level warn
    if [ "$n" -gt 0 ] || [ "$dashboards" -gt 0 ]; then
        # Long enough for the wait, the window and the strace; stopped after.
        lifetime=$((120 + n / 200 + QUIET_WAIT + SETTLE + WINDOW + STRACE_SECONDS))
        # shellcheck disable=SC2086 # $pin_loadgen is a command and its arguments
        $pin_loadgen "$loadgen" --relay "$url" --tokens "$work/tokens" \
            --agents "$n" --dashboards "$dashboards" --idle \
            --ramp "$(awk -v n="$n" 'BEGIN { print n / 1000 }')" --duration "$lifetime" \
            >"$OUT/$name.loadgen.out" 2>&1 &
        loadgen_pid=$!
        deadline=$(($(date +%s) + 60 + n / 200))
        while :; do
            agents=$(gauge agent) dashes=$(gauge dashboard)
            [ "${agents:-0}" -ge "$n" ] && [ "${dashes:-0}" -ge "$dashboards" ] && break
            if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$loadgen_pid" 2>/dev/null; then
                echo "error: the relay holds ${agents:-?} of $n agents and ${dashes:-?} of $dashboards dashboards:" >&2
                cat "$OUT/$name.loadgen.out" "$work/relay.log" >&2
                exit 1
            fi
            sleep 0.5
        done
    fi
    sleep "$SETTLE"
    wait_quiet
    machine0=$(busy_ticks)
    # shellcheck disable=SC2046 # the fields of one line
    set -- $(snapshot)
    sleep "$WINDOW"
    # shellcheck disable=SC2046 # the fields of one line
    set -- "$@" $(snapshot)
    machine1=$(busy_ticks)
    rss=$(rss_kib "$relay_pid")
    agents=$n dashes=$dashboards
    if [ "$n" -gt 0 ] || [ "$dashboards" -gt 0 ]; then
        agents=$(gauge agent) dashes=$(gauge dashboard)
    fi
    epoll=null
    if [ "$use_strace" = 1 ]; then
        timeout -s INT "$STRACE_SECONDS" strace -c -f -e 'trace=/^epoll_p?wait' \
            -p "$relay_pid" -o "$OUT/$name.strace.txt" 2>"$work/strace.err" || true
        epoll=$(epoll_per_s "$OUT/$name.strace.txt")
        if [ "$epoll" = null ]; then
            echo "    (strace counted nothing: $(tail -n 1 "$work/strace.err"))" >&2
        fi
    fi
    if [ -n "$loadgen_pid" ]; then
        kill -TERM "$loadgen_pid" 2>/dev/null || true
        wait "$loadgen_pid" 2>/dev/null || true
        loadgen_pid=""
    fi
    stop_relay
    hz=$(getconf CLK_TCK)
    # $1..$6 the snapshot before, $7..$12 after.
    awk -v t0="$1" -v w0="$2" -v k0="$3" -v r0="$4" -v v0="$5" -v nv0="$6" \
        -v t1="$7" -v w1="$8" -v k1="$9" -v r1="${10}" -v v1="${11}" -v nv1="${12}" \
        -v hz="$hz" -v m="$((machine1 - machine0))" -v rss="$rss" -v epoll="$epoll" \
        -v n="$n" -v agents="${agents:-null}" -v d="$dashboards" -v dashes="${dashes:-null}" '
        BEGIN {
            s = (t1 - t0) / 1e9
            cpu_ms = (k1 - k0) / hz * 1000 / s
            printf "{\"agents\":%d,\"agents_connected_at_end\":%s,\"dashboards\":%d,", n, agents, d
            printf "\"dashboards_connected_at_end\":%s,\"window_s\":%.3f,", dashes, s
            printf "\"voluntary\":%d,\"nonvoluntary\":%d,", v1 - v0, nv1 - nv0
            printf "\"wakeups_per_s\":%.3f,\"epoll_waits_per_s\":%s,", (w1 - w0) / s, epoll
            printf "\"cpu_ticks\":%d,\"cpu_percent\":%.4f,\"cpu_ms_per_s\":%.4f,", k1 - k0, cpu_ms / 10, cpu_ms
            printf "\"on_cpu_us_per_s\":%.2f,\"rss_kib\":%d,", (r1 - r0) / 1000 / s, rss
            printf "\"machine_busy_percent\":%.1f}\n", m / hz * 100 / s
        }' >"$OUT/$name.json"
    sed 's/^/    /' "$OUT/$name.json" >&2
}

# --- Runs -------------------------------------------------------------------------
cases=0
[ "$AGENTS" -gt 0 ] && cases="0 $AGENTS"
run=1
while [ "$run" -le "$RUNS" ]; do
    for label in $labels; do
        for n in $cases; do
            measure "$label" "$n" "$run"
        done
    done
    run=$((run + 1))
done

# --- Report -----------------------------------------------------------------------
# median KEY FILE...: the median of a field over runs, nulls left out.
median() {
    field "$@" | grep -v '^null$' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN { if (v == "" || v == "null") print "n/a"; else printf "%.*f\n", d, v }'; }

# row TITLE KEY DIGITS [SCALE]: a row per case, a column per relay.
row() {
    title=$1 key=$2 digits=$3 scale=${4:-1}
    for n in $cases; do
        line="| $title, $n agents |"
        for label in $labels; do
            v=$(median "$key" "$OUT/$label-$n"-*.json)
            [ -n "$v" ] && v=$(awk -v v="$v" -v s="$scale" 'BEGIN { print v / s }')
            line="$line $(fmt "$v" "$digits") |"
        done
        echo "$line"
    done
}

echo
dash=""
[ "$DASHBOARDS" -gt 0 ] && dash=", plus $DASHBOARDS dashboards beside the agents"
pinned=""
[ -n "$pin_relay" ] && pinned=" The relay on CPU 1, the load generator on CPU 0."
runs="medians of $RUNS runs"
[ "$RUNS" -eq 1 ] && runs="one run"
echo "Idle relay: $runs, $WINDOW s windows, agents connected and sending nothing$dash.$pinned"
for label in $labels; do
    echo "- $label: \`$(bin_of "$label")\` ($("$(bin_of "$label")" --version 2>/dev/null || echo "version unknown"))"
done
echo
header="| |" rule="|---|"
for label in $labels; do
    header="$header $label |" rule="$rule---|"
done
echo "$header"
echo "$rule"
row "wake-ups/s" wakeups_per_s 2
if [ "$use_strace" = 1 ]; then
    row "epoll_wait/s (strace, ${STRACE_SECONDS} s)" epoll_waits_per_s 2
fi
row "CPU (% of a core)" cpu_percent 3
row "CPU (ms/s)" cpu_ms_per_s 3
row "on-CPU (µs/s, schedstat)" on_cpu_us_per_s 1
row "RSS at the end (KiB)" rss_kib 0
row "agents connected at the end" agents_connected_at_end 0
row "machine busy in the window (% of a core)" machine_busy_percent 1
