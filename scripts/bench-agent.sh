#!/bin/sh
# Agent benchmark: binary size, RSS after a long wss:// session, user-space
# instructions per sample cycle (callgrind), CPU at a 1 s interval, and bytes
# per sample on the wire: for this host, and for a busier one, the 8-core,
# 4-interface, 4-disk fixture tree (tests/fixtures/x86_64-bench-8c-4i-4d)
# with its counters moving every second (scripts/fixture-mover.py).
#
#   scripts/bench-agent.sh            # full run (RSS after 10 minutes)
#   RSS_MINUTES=1 scripts/bench-agent.sh
#
# Knobs (environment):
#   RSS_MINUTES      RSS is read after this long connected (default 10)
#   CPU_SECONDS      length of the CPU and wire window (default 60, so about
#                    57 samples counted after the first 3 s)
#   CALLGRIND_SECONDS  lengths of the two callgrind runs (default "15 75")
#   FIXTURE_TMPDIR   where the moving copy of the fixture goes (default
#                    /dev/shm when writable, else a temporary folder)
#   VSTATS_AGENT_BIN measure this agent instead of building the release
#                    artifact with scripts/build-release.sh (a quick look;
#                    its size row then says whether it is static)
#
# Both wire measurements run at the same time, each agent with its own
# wss-sink (its own port, so `ss` tells the sockets apart) and counting
# file; the callgrind runs come before, with nothing else started.
#
# The fixture's four mount points are folders of the copy, so statvfs sizes
# all four on the filesystem that holds it: on a quiet tmpfs their sizes
# hardly move, and the moving figure has no disk-usage churn in it.
#
# Needs: scripts/setup-dev.sh (zig tools, rust-src), valgrind, ss, python3.
# Prints a Markdown table for BENCHMARKS.md.
set -eu
cd "$(dirname "$0")/.."

RSS_MINUTES=${RSS_MINUTES:-10}
CPU_SECONDS=${CPU_SECONDS:-60}
CALLGRIND_SECONDS=${CALLGRIND_SECONDS:-"15 75"}
FIXTURE=tests/fixtures/x86_64-bench-8c-4i-4d
if [ -z "${FIXTURE_TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    FIXTURE_TMPDIR=/dev/shm
fi
work=$(mktemp -d)
moving=$(mktemp -d "${FIXTURE_TMPDIR:-${TMPDIR:-/tmp}}/vstats-bench-fixture.XXXXXX")
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    for pid in $pids; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work" "$moving"
}
trap cleanup EXIT INT TERM

if [ -n "${VSTATS_AGENT_BIN:-}" ]; then
    agent=$VSTATS_AGENT_BIN
else
    # The release artifact itself, built as scripts/build-release.sh builds it.
    scripts/build-release.sh x86_64 >/dev/null
    agent=dist/vstats-agent-linux-x86_64
fi
cargo build --quiet --release --locked --example wss-sink
sink=${CARGO_TARGET_DIR:-target}/release/examples/wss-sink

# Static and stripped: no interpreter, no shared libraries, no symbols.
if readelf -l "$agent" | grep -q INTERP || readelf -d "$agent" | grep -q NEEDED; then
    if [ -z "${VSTATS_AGENT_BIN:-}" ]; then
        echo "error: $agent is not static" >&2
        exit 1
    fi
    linkage="dynamic"
else
    linkage="static"
fi
size=$(stat -c %s "$agent")
binary="x86_64 musl binary, stripped, static"
[ -n "${VSTATS_AGENT_BIN:-}" ] && binary="$agent ($linkage)"

# start_sink NAME: a wss-sink of its own in $work/NAME; sets $port.
start_sink() {
    "$sink" "$work/$1" &
    pids="$pids $!"
    for _ in $(seq 50); do [ -s "$work/$1/port" ] && break; sleep 0.1; done
    port=$(cat "$work/$1/port")
}
start_sink sink
host_port=$port
url="wss://127.0.0.1:$host_port"

# count [NAME]: samples (full or patch) a sink has received.
count() { cat "$work/${1:-sink}/count" 2>/dev/null || echo 0; }
field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# Starts an agent (optionally under a prefix command) against the first
# sink; sets $agent_pid.
start_agent() {
    VSTATS_TOKEN=bench "$@" "$agent" --server "$url" --ca-file "$work/sink/ca.pem" \
        --interval 1 --log-level warn &
    agent_pid=$!
    pids="$pids $agent_pid"
}

# Instructions per sample: two callgrind runs of different lengths; the
# difference divided by the difference in samples cancels start-up (TLS
# handshake, root store, baseline reading) and leaves the steady cycle.
callgrind_run() {
    before=$(count)
    start_agent valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1" --quiet
    sleep "$1"
    kill -TERM "$agent_pid"
    wait "$agent_pid" || true
    samples=$(( $(count) - before ))
    instructions=$(awk '/^summary:/ { print $2 }' "$work/cg.$1")
    echo "$samples $instructions"
}
read -r short_seconds long_seconds <<EOF2
$CALLGRIND_SECONDS
EOF2
read -r short_samples short_ir <<EOF2
$(callgrind_run "$short_seconds")
EOF2
read -r long_samples long_ir <<EOF2
$(callgrind_run "$long_seconds")
EOF2
per_sample=$(( (long_ir - short_ir) / (long_samples - short_samples) ))

# Bytes a sink acknowledged on the agent's socket to PORT: TLS records and
# WebSocket framing included, TCP/IP headers not.
acked() {
    ss -tinH state established "( dport = :$1 )" |
        grep -o 'bytes_acked:[0-9]*' | head -n 1 | cut -d: -f2
}
per_sample_bytes() { echo $(( ($2 - $1) / ($4 - $3) )); }
monthly_gb() { awk -v b="$1" 'BEGIN { printf "%.2f", b * 86400 * 30 / 1e9 }'; }

# The moving fixture: a copy the mover rewrites every second, an agent
# rooted in it, and a sink of its own.
start_sink sink-fixture
fixture_port=$port
rmdir "$moving"
python3 scripts/fixture-mover.py --from "$FIXTURE" "$moving" &
pids="$pids $!"
mover_pid=$!
for _ in $(seq 100); do [ -s "$moving/.mover-ready" ] && break; sleep 0.1; done
if [ ! -s "$moving/.mover-ready" ]; then
    echo "error: scripts/fixture-mover.py did not start" >&2
    exit 1
fi
VSTATS_TOKEN=bench "$agent" --server "wss://127.0.0.1:$fixture_port" \
    --ca-file "$work/sink-fixture/ca.pem" --interval 1 --log-level warn \
    --path-procfs "$moving/proc" --path-sysfs "$moving/sys" --path-rootfs "$moving" &
fixture_pid=$!
pids="$pids $fixture_pid"

# CPU at a 1 s interval, from the kernel's accounting of the process; bytes
# on the wire per sample over the same samples, once the handshake is past,
# for this host and, at the same time, for the moving fixture.
start_agent
cpu_pid=$agent_pid
sleep 3
acked_before=$(acked "$host_port") samples_before=$(count)
fixture_acked_before=$(acked "$fixture_port") fixture_before=$(count sink-fixture)
sleep "$((CPU_SECONDS - 3))"
acked_after=$(acked "$host_port") samples_after=$(count)
fixture_acked_after=$(acked "$fixture_port") fixture_after=$(count sink-fixture)
wire=$(per_sample_bytes "$acked_before" "$acked_after" "$samples_before" "$samples_after")
monthly=$(monthly_gb "$wire")
fixture_wire=$(per_sample_bytes "$fixture_acked_before" "$fixture_acked_after" \
    "$fixture_before" "$fixture_after")
fixture_monthly=$(monthly_gb "$fixture_wire")
ticks=$(awk '{ print $14 + $15 }' "/proc/$cpu_pid/stat")
hz=$(getconf CLK_TCK)
cpu_percent=$(awk -v t="$ticks" -v hz="$hz" -v s="$CPU_SECONDS" 'BEGIN { printf "%.3f", t / hz / s * 100 }')
# The fixture's agent and mover are done; the host's agent runs on for RSS.
kill -TERM "$fixture_pid" "$mover_pid"
wait "$fixture_pid" || true
wait "$mover_pid" || true

# RSS after a long connection (the same process keeps running).
sleep $(( RSS_MINUTES * 60 - CPU_SECONDS > 0 ? RSS_MINUTES * 60 - CPU_SECONDS : 0 ))
rss_kb=$(field "$cpu_pid" VmRSS)
hwm_kb=$(field "$cpu_pid" VmHWM)
threads=$(field "$cpu_pid" Threads)
children=$(pgrep -P "$cpu_pid" | wc -l)

cat <<TABLE
| measure | value | target |
|---|---|---|
| $binary | $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.2f", b / 1048576 }') MiB) | <= 1.5 MB |
| RSS after $RSS_MINUTES min connected over wss:// | $rss_kb KiB (peak $hwm_kb KiB) | <= 2 MB |
| instructions per sample cycle (callgrind, user space) | $per_sample | <= 300,000 |
| CPU at a 1 s interval, over $CPU_SECONDS s | $cpu_percent % of one core | |
| bytes on the wire per sample, wss:// at 1 s ($((samples_after - samples_before)) samples) | $wire bytes ($monthly GB a month) | <= 300 |
| bytes on the wire per sample, 8 cores / 4 interfaces / 4 disks fixture, moving ($((fixture_after - fixture_before)) samples) | $fixture_wire bytes ($fixture_monthly GB a month) | <= 450 |
| threads / child processes | $threads / $children | 1 / 0 |
TABLE
echo
echo "callgrind: $short_samples samples = $short_ir Ir, $long_samples samples = $long_ir Ir"
