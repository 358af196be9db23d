#!/bin/sh
# Soak of an agent whose relay is down (issue 11), not part of CI: one
# release vstats-agent at `--interval 0.1` pointed at a loopback port where
# nothing listens, for MINUTES (default 30). Its VmRSS and open fds are
# sampled every 10 s; it must keep flat memory and leak no fds while it
# retries (its backoff: 1 s doubling to 30 s, full jitter).
#
#   scripts/soak-agent.sh [MINUTES]
#
# Knobs (environment):
#   RSS_MARGIN_KIB  how far its RSS may end above the first sample (64)
#   OUT             where the CSV, log and summary go (default
#                   target/soak-agent)
#   PLOT            a PNG drawn with gnuplot (default: none)
#
# Prints a Markdown summary (also $OUT/summary.md); exits nonzero if the
# fds grew, the RSS grew by more than RSS_MARGIN_KIB, or the agent died.
set -eu
cd "$(dirname "$0")/.."

MINUTES=${1:-30}
RSS_MARGIN_KIB=${RSS_MARGIN_KIB:-64}
OUT=${OUT:-target/soak-agent}
PLOT=${PLOT:-}
EVERY=10

work=$(mktemp -d)
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'cleanup; trap - EXIT; exit 130' INT TERM
mkdir -p "$OUT"
rm -f "$OUT"/*

# The same build as soak.sh (the same features, so one build serves both).
cargo build --quiet --release --locked --bin vstats-relay --bin vstats-agent --example loadgen
agent=${CARGO_TARGET_DIR:-target}/release/vstats-agent

# A loopback port where nothing listens: connects are refused at once.
port=""
while [ -z "$port" ]; do
    p=$(awk -v s="$$" 'BEGIN { srand(s); print 20000 + int(rand() * 30000) }')
    ss -Hltn "sport = :$p" | grep -q . || port=$p
done
od -An -tx1 -v -N 32 /dev/urandom | tr -d ' \n' >"$work/token"

"$agent" --server "ws://127.0.0.1:$port" --token-file "$work/token" --interval 0.1 \
    2>"$OUT/agent.log" &
agent_pid=$!

fd_count() { find "/proc/$agent_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
echo "t_s,rss_kib,fds,connect_attempts" >"$OUT/samples.csv"
echo "soak-agent: $MINUTES min, relay down (ws://127.0.0.1:$port, nothing listening), --interval 0.1" >&2
start=$(date +%s)
end=$((start + MINUTES * 60))
while [ "$(date +%s)" -lt "$end" ]; do
    sleep "$EVERY"
    if ! kill -0 "$agent_pid" 2>/dev/null; then
        echo "FAIL: the agent exited:" >&2
        cat "$OUT/agent.log" >&2
        exit 1
    fi
    rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$agent_pid/status")
    attempts=$(grep -c "cannot connect" "$OUT/agent.log" || true)
    echo "$(($(date +%s) - start)),$rss,$(fd_count),$attempts" >>"$OUT/samples.csv"
done
hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$agent_pid/status")
threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$agent_pid/status")
kill -TERM "$agent_pid"
code=0
wait "$agent_pid" || code=$?
agent_pid=""

awk -F, 'NR == 2 { fr = $2; ff = $3 } NR > 1 { lr = $2; lf = $3; la = $4; if ($2 > mr) mr = $2; if ($3 > mf) mf = $3 }
    END { print fr, lr, mr, ff, lf, mf, la }' "$OUT/samples.csv" >"$work/figures"
read -r first_rss last_rss max_rss first_fd last_fd max_fd attempts <"$work/figures"
longest=$(sed -n 's/.*reconnecting in \([0-9.]*\) s.*/\1/p' "$OUT/agent.log" | sort -g | tail -n 1)
{
    echo "Agent soak of $(date -u +%Y-%m-%d): $MINUTES min at \`--interval 0.1\`, relay down (a closed loopback port), sampled every $EVERY s."
    echo
    echo "| measure | first | last | max |"
    echo "|---|---|---|---|"
    echo "| VmRSS | $first_rss KiB | $last_rss KiB | $max_rss KiB (VmHWM $hwm KiB) |"
    echo "| open fds | $first_fd | $last_fd | $max_fd |"
    echo
    echo "$attempts connect attempts (refused), the longest wait between them ${longest:-n/a} s; $threads thread(s); SIGTERM at the end: exit $code."
} | tee "$OUT/summary.md"

if [ -n "$PLOT" ]; then
    gnuplot <<EOF
set terminal pngcairo size 900,300 font ",10"
set output "$PLOT"
set datafile separator ","
set title "vstats-agent --interval 0.1, relay down for $MINUTES min"
set xlabel "minutes"
set ylabel "VmRSS (KiB)"
set y2label "open fds"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set key bottom right
set grid
plot "$OUT/samples.csv" every ::1 using (\$1/60):2 with lines lw 2 title "VmRSS (KiB)", \
     "" every ::1 using (\$1/60):3 axes x1y2 with steps title "open fds"
EOF
fi

status=0
[ "$last_fd" -le "$first_fd" ] || { echo "FAIL: open fds grew from $first_fd to $last_fd" >&2; status=1; }
[ "$last_rss" -le $((first_rss + RSS_MARGIN_KIB)) ] ||
    { echo "FAIL: RSS grew from $first_rss to $last_rss KiB" >&2; status=1; }
[ "$code" = 0 ] || { echo "FAIL: the agent exited $code on SIGTERM" >&2; status=1; }
# The last command: its status is the script's.
[ "$status" = 0 ]
