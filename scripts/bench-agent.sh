#!/bin/sh
# Agent benchmark: binary size, RSS after a long wss:// session, user-space
# instructions per sample cycle (callgrind), CPU at a 1 s interval, and bytes
# per sample on the wire.
#
#   scripts/bench-agent.sh            # full run (RSS after 10 minutes)
#   RSS_MINUTES=1 scripts/bench-agent.sh
#
# Needs: scripts/setup-dev.sh (zig tools, rust-src), valgrind, ss. Prints a Markdown
# table for BENCHMARKS.md.
set -eu
cd "$(dirname "$0")/.."

RSS_MINUTES=${RSS_MINUTES:-10}
CPU_SECONDS=${CPU_SECONDS:-60}
work=$(mktemp -d)
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The release artifact itself, built as scripts/build-release.sh builds it.
scripts/build-release.sh x86_64 >/dev/null
cargo build --quiet --release --locked --example wss-sink
agent=dist/vstats-agent-linux-x86_64
sink=target/release/examples/wss-sink

# Static and stripped: no interpreter, no shared libraries, no symbols.
if readelf -l "$agent" | grep -q INTERP || readelf -d "$agent" | grep -q NEEDED; then
    echo "error: $agent is not static" >&2
    exit 1
fi
size=$(stat -c %s "$agent")

"$sink" "$work/sink" &
pids="$pids $!"
for _ in $(seq 50); do [ -s "$work/sink/port" ] && break; sleep 0.1; done
port=$(cat "$work/sink/port")
url="wss://127.0.0.1:$port"

count() { cat "$work/sink/count" 2>/dev/null || echo 0; }
field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# Starts an agent (optionally under a prefix command); sets $agent_pid.
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
read -r short_samples short_ir <<EOF2
$(callgrind_run 15)
EOF2
read -r long_samples long_ir <<EOF2
$(callgrind_run 75)
EOF2
per_sample=$(( (long_ir - short_ir) / (long_samples - short_samples) ))

# Bytes the sink acknowledged on the agent's socket: TLS records and
# WebSocket framing included, TCP/IP headers not.
acked() {
    ss -tinH state established "( dport = :$port )" |
        grep -o 'bytes_acked:[0-9]*' | head -n 1 | cut -d: -f2
}

# CPU at a 1 s interval, from the kernel's accounting of the process; bytes
# on the wire per sample over the same samples, once the handshake is past.
start_agent
cpu_pid=$agent_pid
sleep 3
acked_before=$(acked) samples_before=$(count)
sleep "$((CPU_SECONDS - 3))"
acked_after=$(acked) samples_after=$(count)
wire=$(( (acked_after - acked_before) / (samples_after - samples_before) ))
monthly=$(awk -v b="$wire" 'BEGIN { printf "%.2f", b * 86400 * 30 / 1e9 }')
ticks=$(awk '{ print $14 + $15 }' "/proc/$cpu_pid/stat")
hz=$(getconf CLK_TCK)
cpu_percent=$(awk -v t="$ticks" -v hz="$hz" -v s="$CPU_SECONDS" 'BEGIN { printf "%.3f", t / hz / s * 100 }')

# RSS after a long connection (the same process keeps running).
sleep $(( RSS_MINUTES * 60 - CPU_SECONDS > 0 ? RSS_MINUTES * 60 - CPU_SECONDS : 0 ))
rss_kb=$(field "$cpu_pid" VmRSS)
hwm_kb=$(field "$cpu_pid" VmHWM)
threads=$(field "$cpu_pid" Threads)
children=$(pgrep -P "$cpu_pid" | wc -l)

cat <<TABLE
| measure | value | target |
|---|---|---|
| x86_64 musl binary, stripped, static | $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.2f", b / 1048576 }') MiB) | <= 1.5 MB |
| RSS after $RSS_MINUTES min connected over wss:// | $rss_kb KiB (peak $hwm_kb KiB) | <= 2 MB |
| instructions per sample cycle (callgrind, user space) | $per_sample | <= 300,000 |
| CPU at a 1 s interval, over $CPU_SECONDS s | $cpu_percent % of one core | |
| bytes on the wire per sample, wss:// at 1 s ($((samples_after - samples_before)) samples) | $wire bytes ($monthly GB a month) | <= 300 |
| threads / child processes | $threads / $children | 1 / 0 |
TABLE
echo
echo "callgrind: $short_samples samples = $short_ir Ir, $long_samples samples = $long_ir Ir"
