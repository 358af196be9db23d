#!/bin/sh
# Soak with faults (issue 11), not part of CI: a relay on loopback holding
# a fleet of the load generator's agents (examples/loadgen.rs --soak), a
# few real agents, reading dashboards and a slow dashboard, for MINUTES,
# while
#   - the relay is killed with SIGKILL and restarted every RESTART_EVERY s;
#   - one real agent at a time is stopped (SIGSTOP) for STOP_FOR s, longer
#     than the relay's 75 s silence limit, every STOP_EVERY s, then resumed;
#   - the state file is edited every EDIT_EVERY s (`server add` of a new
#     server, `server remove` of the one added before, `server rotate-token`
#     of a spare), never touching the servers the agents use.
# The relay's RSS and open fds, the agents and dashboards connected and
# the samples lost are recorded once a second.
#
#   scripts/soak.sh [MINUTES] [AGENTS]     # defaults 30 and 2000
#   RESTART_EVERY=60 STOP_FOR=40 scripts/soak.sh 3 200
#
# Knobs (environment):
#   RESTART_EVERY   seconds between relay kills (default 300; 60 when
#                   MINUTES < 10)
#   DOWN            seconds the killed relay stays down (default 1)
#   REAL_AGENTS     real vstats-agent processes, --interval 1 (default 3)
#   STOP_EVERY      seconds between SIGSTOPs of a real agent (default 150)
#   STOP_FOR        seconds it stays stopped (default 90)
#   EDIT_EVERY      seconds between state-file edits (default 60)
#   DASHBOARDS      reading dashboards (default 5)
#   SLOW_DASHBOARDS dashboards that read SLOW_BYTES a second (default 1, 4096)
#   TLS             1: wss:// (default 0: ws://; the slow dashboard needs ws)
#   RSS_MARGIN      percent the relay's RSS may end above its baseline (25)
#   FD_MARGIN       open fds it may end above its baseline (10)
#   OUT             where the CSVs, logs and summary go (default target/soak)
#   PLOT            the PNG drawn with gnuplot (default docs/soak.png; empty
#                   for none)
#
# Prints a Markdown summary (also $OUT/summary.md) and exits nonzero if a
# sample was lost outside the restarts, the registry changed, an agent did
# not come back, or the relay's RSS or fds did not return near baseline.
#
# "Lost" (examples/loadgen.rs, "Soak"): a sample a loadgen agent wrote on
# an open connection, sent after a reading dashboard's upgrade and more
# than 1 s before the relay that both were connected to was killed, that
# this dashboard never received while it kept up. Samples sent in the last
# second before a kill are excused (in flight) and counted apart; samples
# are not sent while an agent is disconnected. A reading dashboard whose
# samples arrive 0.5 s late or more is behind (the generator stalled on a
# busy machine): the relay then treats it as any slow dashboard, sending
# the newest sample of a server in place of an unsent one, and what it
# misses until 2 s after is counted apart ("missed while behind"). The
# slow dashboard is not counted.
set -eu
cd "$(dirname "$0")/.."

MINUTES=${1:-30}
AGENTS=${2:-2000}
if [ "$MINUTES" -lt 10 ]; then default_restart=60; else default_restart=300; fi
RESTART_EVERY=${RESTART_EVERY:-$default_restart}
DOWN=${DOWN:-1}
REAL_AGENTS=${REAL_AGENTS:-3}
STOP_EVERY=${STOP_EVERY:-150}
STOP_FOR=${STOP_FOR:-90}
EDIT_EVERY=${EDIT_EVERY:-60}
DASHBOARDS=${DASHBOARDS:-5}
SLOW_DASHBOARDS=${SLOW_DASHBOARDS:-1}
SLOW_BYTES=${SLOW_BYTES:-4096}
TLS=${TLS:-0}
RSS_MARGIN=${RSS_MARGIN:-25}
FD_MARGIN=${FD_MARGIN:-10}
OUT=${OUT:-target/soak}
PLOT=${PLOT-docs/soak.png}
# Spare servers for rotate-token, never used by an agent.
SPARES=3
# The baseline: this long after the whole fleet first connected.
BASELINE_AFTER=20

seconds=$((MINUTES * 60))
work=$(mktemp -d)
relay_pid="" loadgen_pid="" agent_pids="" reader_pids="" stopped=""
cleanup() {
    for pid in $agent_pids; do kill -CONT "$pid" 2>/dev/null || true; done
    for pid in $loadgen_pid $agent_pids $relay_pid; do kill "$pid" 2>/dev/null || true; done
    for pid in $reader_pids; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'cleanup; trap - EXIT; exit 130' INT TERM
mkdir -p "$OUT"
rm -f "$OUT"/*

target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --release --locked --bin vstats-relay --bin vstats-agent --example loadgen
relay=$target/release/vstats-relay
agent_bin=$target/release/vstats-agent
loadgen=$target/release/examples/loadgen
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

now_ms() { echo $(($(date +%s%N) / 1000000)); }
start_ms=$(now_ms)
# Seconds since the start, with a decimal.
since() { awk -v n="$(now_ms)" -v s="$start_ms" 'BEGIN { printf "%.1f\n", (n - s) / 1000 }'; }
event() { echo "$(since) $*" >>"$OUT/events.txt"; }

# --- Registry -----------------------------------------------------------------
# The fleet's servers first (loadgen agent i takes token i), then the real
# agents', then the spares.
servers=$((AGENTS + REAL_AGENTS + SPARES))
registry_material "$servers"
state_file "$servers"
head -n "$AGENTS" "$work/tokens" >"$work/fleet-tokens"
# The servers no edit touches, as "id token-hash" lines.
paste -d' ' "$work/ids" "$work/hashes" | head -n $((AGENTS + REAL_AGENTS)) | sort >"$work/kept-before"

# registry_pairs: "id token-hash" of every server in the state file.
registry_pairs() {
    tr ',{}' '[\n*]' <"$work/state.json" |
        awk -F'"' '$2 == "id" { id = $4 } $2 == "token_sha256" { print id, $4 }' | sort
}

# --- Relay ----------------------------------------------------------------------
mode=plain
if [ "$TLS" = 1 ]; then
    mode=tls
    tls_material
    SLOW_DASHBOARDS=0
fi
# info: a line per connection that ends, with why (the silence closes).
relay_args="--state $work/state.json --log-level info"
# shellcheck disable=SC2086 # relay_args holds plain words
launch_relay "$mode" $relay_args
echo "$relay_pid" >"$work/relay.pid"
event up "$relay_pid"

# restart_relay: SIGKILL, DOWN seconds down, then a new relay on the same
# port; the pid file tells the load generator which relay is current.
restart_relay() {
    kill -KILL "$relay_pid"
    wait "$relay_pid" 2>/dev/null || true
    event kill "$relay_pid"
    sleep "$DOWN"
    set -- --listen "127.0.0.1:$port"
    [ "$mode" = tls ] && set -- "$@" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
    # shellcheck disable=SC2086 # relay_args holds plain words
    "$relay" "$@" $relay_args 2>>"$work/relay.log" &
    relay_pid=$!
    # Agents may connect from here on (before "up", when it listens).
    event start "$relay_pid"
    for _ in $(seq 200); do
        ss -Hltnp "sport = :$port" 2>/dev/null | grep -q "pid=$relay_pid," && break
        sleep 0.05
    done
    echo "$relay_pid" >"$work/relay.pid.new"
    mv "$work/relay.pid.new" "$work/relay.pid"
    event up "$relay_pid"
}

# --- Load generator and real agents ------------------------------------------------
set -- --relay "$url" --tokens "$work/fleet-tokens" --agents "$AGENTS" \
    --dashboards "$DASHBOARDS" --patch --soak "$seconds" \
    --relay-pid-file "$work/relay.pid" --slow-dashboards "$SLOW_DASHBOARDS" \
    --slow-bytes-per-s "$SLOW_BYTES"
[ "$mode" = tls ] && set -- "$@" --ca-file "$work/ca.pem"
"$loadgen" "$@" >"$OUT/loadgen.out" 2>"$OUT/loadgen.err" &
loadgen_pid=$!

# Each real agent logs through a FIFO to a reader that stamps its lines
# with seconds since the start (the agent's own log has no times).
j=0
while [ "$j" -lt "$REAL_AGENTS" ]; do
    j=$((j + 1))
    sed -n "$((AGENTS + j))p" "$work/tokens" | tr -d '\n' >"$work/agent-$j.token"
    mkfifo "$work/agent-$j.fifo"
    while IFS= read -r line; do
        echo "$(since) $line"
    done <"$work/agent-$j.fifo" >"$OUT/agent-$j.log" &
    reader_pids="$reader_pids $!"
    set -- --server "$url/ws/agent" --token-file "$work/agent-$j.token" --interval 1
    [ "$mode" = tls ] && set -- "$@" --ca-file "$work/ca.pem"
    "$agent_bin" "$@" 2>"$work/agent-$j.fifo" &
    agent_pids="$agent_pids $!"
done

# --- Faults and samples, once a second ----------------------------------------------
# real_connected: how many real agents' last connection event is a connect.
real_connected() {
    n=0
    for f in "$OUT"/agent-*.log; do
        state=$(grep -E 'connected to|connection lost' "$f" | tail -n 1)
        case $state in *"connected to"*) n=$((n + 1)) ;; esac
    done
    echo "$n"
}

echo "t_s,relay_up,rss_kib,fds,agents,dashboards,slow_dashboards,real_agents,lost,behind" >"$OUT/samples.csv"
next_restart=$RESTART_EVERY next_edit=$EDIT_EVERY next_stop=$((STOP_EVERY / 2))
cont_at="" stop_turn=0 edit=0 added=""
echo "soak: $MINUTES min, $AGENTS loadgen agents + $REAL_AGENTS real, $DASHBOARDS dashboards + $SLOW_DASHBOARDS slow, $url; restarts every $RESTART_EVERY s" >&2
while kill -0 "$loadgen_pid" 2>/dev/null; do
    sleep 1
    t=$(since)
    ts=${t%.*}
    # The relay: SIGKILL and restart, unless the run is about to end.
    if [ "$ts" -ge "$next_restart" ] && [ "$ts" -lt $((seconds - 30)) ]; then
        restart_relay
        next_restart=$((next_restart + RESTART_EVERY))
    fi
    # The state file: add, remove the one added before, rotate a spare.
    if [ "$ts" -ge "$next_edit" ]; then
        edit=$((edit + 1))
        new=$("$relay" server add --name "soak-edit-$edit" --location soak --json --state "$work/state.json" |
            sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p')
        if [ -n "$added" ]; then
            "$relay" server remove "$added" --state "$work/state.json" >/dev/null
        fi
        spare=$(sed -n "$((AGENTS + REAL_AGENTS + 1 + edit % SPARES))p" "$work/ids")
        "$relay" server rotate-token "$spare" --state "$work/state.json" >/dev/null
        event edit "added=$new removed=${added:-none} rotated=$spare"
        added=$new
        next_edit=$((next_edit + EDIT_EVERY))
    fi
    # A real agent: SIGSTOP, and SIGCONT STOP_FOR s later.
    if [ -n "$cont_at" ] && [ "$ts" -ge "$cont_at" ]; then
        kill -CONT "$stopped"
        event cont "$stopped"
        cont_at="" stopped=""
    fi
    if [ "$REAL_AGENTS" -gt 0 ] && [ -z "$cont_at" ] && [ "$ts" -ge "$next_stop" ] &&
        [ $((ts + STOP_FOR)) -lt $((seconds - 10)) ]; then
        stop_turn=$((stop_turn % REAL_AGENTS + 1))
        stopped=$(echo "$agent_pids" | awk -v k="$stop_turn" '{ print $k }')
        kill -STOP "$stopped"
        event stop "$stopped" "agent-$stop_turn"
        cont_at=$((ts + STOP_FOR))
        next_stop=$((next_stop + STOP_EVERY))
    fi
    # The sample.
    up=0 rss="" fds=""
    if [ -r "/proc/$relay_pid/status" ]; then
        up=1
        rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$relay_pid/status")
        fds=$(find "/proc/$relay_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    fi
    line=$(tail -n 5 "$OUT/loadgen.out" | grep '^soak,[0-9]' | tail -n 1 || true)
    # soak,t_s,relay_up,epoch,agents,dashboards,slow,sent,received,lost,excused,behind
    fleet=$(echo "$line" | awk -F, '{ print $5 "," $6 "," $7 }')
    lost=$(echo "$line" | awk -F, '{ print $10 "," $12 }')
    [ -n "$line" ] || fleet=",," lost=","
    echo "$t,$up,$rss,$fds,$fleet,$(real_connected),$lost" >>"$OUT/samples.csv"
done
wait "$loadgen_pid" || {
    echo "error: the load generator failed:" >&2
    cat "$OUT/loadgen.err" >&2
    exit 1
}
loadgen_pid=""
final_real=$(real_connected)
cp "$work/relay.log" "$OUT/relay.log"
# The last relay's own counters (since its start): samples it conflated
# for dashboards too slow to take each one, samples over an agent's rate.
metric() {
    awk -v m="$1" '$1 == m { print $2 }' "$OUT/metrics.txt"
}
if [ "$mode" = plain ] && command -v curl >/dev/null; then
    curl -fsS "http://127.0.0.1:$port/metrics" >"$OUT/metrics.txt" 2>/dev/null || true
fi
touch "$OUT/metrics.txt"
conflated=$(metric vstats_relay_conflated_messages_total)
rate_dropped=$(metric vstats_relay_dropped_samples_total)
"$relay" server list --json --state "$work/state.json" >"$OUT/servers.json"

# --- Results ------------------------------------------------------------------------
report=$(tail -n 1 "$OUT/loadgen.out")
echo "$report" >"$OUT/loadgen.json"
num() { field "$1" "$OUT/loadgen.json" | head -n 1; }

# The registry: the servers no edit touched, ids and token hashes, as
# before; and the count the relay's own `server list` gives.
registry_pairs >"$work/after"
kept_after=$(paste -d' ' "$work/ids" | head -n $((AGENTS + REAL_AGENTS)) |
    awk 'NR == FNR { keep[$1] = 1; next } $1 in keep' - "$work/after")
kept_before_sum=$(sha256sum <"$work/kept-before" | cut -c1-16)
kept_after_sum=$(echo "$kept_after" | sha256sum | cut -c1-16)
listed=$(grep -o '"id"' "$OUT/servers.json" | wc -l)
# Every fleet, real and spare server, plus the last server added.
expected_listed=$((servers + 1))
registry_ok=0
[ "$kept_before_sum" = "$kept_after_sum" ] && [ "$listed" -eq "$expected_listed" ] && registry_ok=1

# The relay's RSS and fds: the baseline, BASELINE_AFTER s after the whole
# fleet first connected; the most; the end, the last sample with the whole
# fleet connected to the last relay.
awk -F, -v n="$AGENTS" -v after="$BASELINE_AFTER" '
    NR == 1 { next }
    first == "" && $5 == n { first = $1 }
    first != "" && base == "" && $1 >= first + after && $2 == 1 { base = $3; basefd = $4 }
    $2 == 1 && $3 > maxrss { maxrss = $3 } $2 == 1 && $4 > maxfd { maxfd = $4 }
    $2 == 1 && $5 == n { endrss = $3; endfd = $4; endt = $1 }
    END { print base + 0, basefd + 0, maxrss + 0, maxfd + 0, endrss + 0, endfd + 0, endt + 0 }' \
    "$OUT/samples.csv" >"$work/memory"
read -r base_rss base_fd max_rss max_fd end_rss end_fd end_t <"$work/memory"
memory_ok=0
awk -v b="$base_rss" -v e="$end_rss" -v bf="$base_fd" -v ef="$end_fd" -v m="$RSS_MARGIN" -v fm="$FD_MARGIN" \
    'BEGIN { exit !(b > 0 && e > 0 && e <= b * (1 + m / 100) && ef <= bf + fm) }' && memory_ok=1
# The most, per relay lifetime (between kills).
per_relay=$(awk -F'[ ,]' '
    FILENAME ~ /events/ { if ($2 == "kill") kill[++nk] = $1; next }
    FNR > 1 && $2 == 1 {
        k = 1
        while (k <= nk && kill[k] <= $1) k++
        if ($3 > r[k]) r[k] = $3
        if ($4 > f[k]) f[k] = $4
    }
    END { for (i = 1; i <= nk + 1; i++) printf "%s%.1f/%d", (i > 1 ? ", " : ""), r[i] / 1024, f[i]; print "" }' \
    "$OUT/events.txt" "$OUT/samples.csv")

# Real agents: after each restart, how long after the new relay started
# each (not stopped then) logged its next connect; after each SIGCONT, how
# long until the resumed one did.
awk '
    FILENAME ~ /events/ {
        if ($2 == "start") ups[++nu] = $1
        if ($2 == "stop") { stop_at[++ns] = $1; stop_who[ns] = $4 }
        if ($2 == "cont") cont_at[++nc] = $1
        next
    }
    / connected to / { f = FILENAME; sub(/.*\//, "", f); sub(/\.log$/, "", f); conn[f, ++cn[f]] = $1; agents[f] = 1 }
    END {
        for (u = 1; u <= nu; u++) {
            worst = -1
            for (a in agents) {
                stopped = 0
                for (s = 1; s <= ns; s++) if (stop_who[s] == a && stop_at[s] <= ups[u] && (s > nc || cont_at[s] >= ups[u])) stopped = 1
                if (stopped) continue
                back = -1
                for (c = 1; c <= cn[a]; c++) if (conn[a, c] >= ups[u]) { back = conn[a, c] - ups[u]; break }
                if (back < 0) { worst = "never"; break }
                if (back > worst) worst = back
            }
            printf "restart %d %s\n", u, worst
        }
        for (s = 1; s <= nc; s++) {
            a = stop_who[s]; back = "never"
            for (c = 1; c <= cn[a]; c++) if (conn[a, c] >= cont_at[s]) { back = conn[a, c] - cont_at[s]; break }
            printf "resume %d %s %s\n", s, a, back
        }
    }' "$OUT/events.txt" "$OUT"/agent-*.log >"$OUT/real-agents.txt"
real_restarts=$(awk '$1 == "restart" { printf "%s%s", (n++ ? ", " : ""), $3 }' "$OUT/real-agents.txt")
real_resumes=$(awk '$1 == "resume" { printf "%s%s", (n++ ? ", " : ""), $4 }' "$OUT/real-agents.txt")
real_never=$(grep -c never "$OUT/real-agents.txt" || true)
# What the relay said about the stopped agents and the slow dashboard:
# closed after 75 s of silence (the slow one's pongs wait behind its
# backlog), or as too slow (1013).
silence_closes=$(grep -c "agent for .*silent for" "$OUT/relay.log" || true)
slow_closes=$(grep -Ec "dashboard .*(silent for|too slow)" "$OUT/relay.log" || true)

lost=$(num samples_lost)
fleet_back=$(num restarts_all_back)
fleet_times=$(sed -n 's/.*"restarts":\[\(.*\)\],"restarts_all_back".*/\1/p' "$OUT/loadgen.json" |
    tr '}' '\n' | sed -n 's/.*"all_agents_back_after_up_s":\([0-9.nul]*\).*/\1/p' |
    awk '{ printf "%s%s", (NR > 1 ? ", " : ""), ($1 == "null" ? "never" : sprintf("%.1f", $1)) }')
down_times=$(sed -n 's/.*"restarts":\[\(.*\)\],"restarts_all_back".*/\1/p' "$OUT/loadgen.json" |
    tr '}' '\n' | sed -n 's/.*"down_s":\([0-9.]*\).*/\1/p' |
    awk '{ printf "%s%.1f", (NR > 1 ? ", " : ""), $1 }')
# When dashboards missed samples: "t=SECONDS dDASHBOARD KIND COUNT".
gaps=$(sed -n 's/.*"gaps":\[\([^]]*\)\].*/\1/p' "$OUT/loadgen.json" | tr '}' '\n' |
    sed -n 's/.*"dashboard":\([0-9]*\),"kind":"\([a-z]*\)","samples":\([0-9]*\),"t_s":\([0-9.]*\).*/t=\4 s d\1 \2 \3/p' |
    head -n 20 | paste -sd';' -)
[ -n "$gaps" ] || gaps="none"
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

{
    echo "Soak of $(date -u +%Y-%m-%d): $MINUTES min, $AGENTS loadgen agents (lean wire, 1 Hz) + $REAL_AGENTS real agents (\`--interval 1\`), $DASHBOARDS reading dashboards + $SLOW_DASHBOARDS slow ($SLOW_BYTES B/s), $mode; relay killed (SIGKILL) every $RESTART_EVERY s and restarted after $DOWN s; a real agent stopped (SIGSTOP) for $STOP_FOR s every $STOP_EVERY s; the state file edited every $EDIT_EVERY s."
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| relay restarts (SIGKILL) | $(grep -c ' kill ' "$OUT/events.txt" || true) (down $down_times s as the load generator saw it) |"
    echo "| relay RSS: baseline / max / end | $(mib "$base_rss") / $(mib "$max_rss") / $(mib "$end_rss") MiB |"
    echo "| relay open fds: baseline / max / end | $base_fd / $max_fd / $end_fd |"
    echo "| relay RSS MiB / fds, max per lifetime | $per_relay |"
    echo "| loadgen fleet: all $AGENTS back after each restart (s after the new relay listened) | $fleet_times |"
    echo "| real agents: all back after each restart (s after the new relay started, worst of the agents not stopped) | $real_restarts |"
    echo "| real agents: back after SIGCONT (s) | $real_resumes |"
    echo "| agents closed by the relay for silence (75 s) | $silence_closes (of $(grep -c ' stop ' "$OUT/events.txt" || true) stops) |"
    echo "| samples sent / received by each reading dashboard (sum) | $(num samples_sent) / $(num samples_received) |"
    echo "| samples lost outside restarts | $lost |"
    echo "| samples excused (sent < 1 s before a kill, missing) | $(num samples_excused) |"
    echo "| samples missed while a reading dashboard was behind (conflated by the relay) | $(num samples_missed_while_behind) (worst lateness $(num worst_dashboard_latency_ms) ms; $gaps) |"
    echo "| connections dropped outside restarts: agents / reading dashboards | $(num agent_drops_other) / $(num dashboard_drops_other) |"
    echo "| slow dashboard: connections / samples / bytes read | $(num slow_connects) / $(num slow_samples) / $(num slow_bytes) |"
    echo "| the last relay's counters: samples conflated for slow dashboards / dropped over an agent's rate | ${conflated:-n/a} / ${rate_dropped:-n/a} |"
    echo "| dashboards closed by the relay for silence or as too slow (its log) | $slow_closes |"
    echo "| slow dashboard: how its connections ended, as it saw them | $(sed -n 's/.*"slow_ends":\({[^}]*}\).*/\1/p' "$OUT/loadgen.json") |"
    echo "| state-file edits (add + remove + rotate-token) | $edit |"
    echo "| registry: untouched servers' ids and token hashes before / after | $kept_before_sum / $kept_after_sum |"
    echo "| registry: servers listed at the end (expected) | $listed ($expected_listed) |"
    echo "| real agents connected at the end | $final_real / $REAL_AGENTS |"
} | tee "$OUT/summary.md"

# --- Plot ---------------------------------------------------------------------------
if [ -n "$PLOT" ]; then
    kills=$(awk '$2 == "kill" { printf "%s%s", (n++ ? " " : ""), $1 / 60 }' "$OUT/events.txt")
    stops=$(awk '$2 == "stop" { printf "%s%s", (n++ ? " " : ""), $1 / 60 }' "$OUT/events.txt")
    gnuplot <<EOF
set terminal pngcairo size 900,500 font ",10"
set output "$PLOT"
set datafile separator ","
set datafile missing ""
set title "Soak: relay killed every $RESTART_EVERY s, $AGENTS + $REAL_AGENTS agents, $DASHBOARDS + $SLOW_DASHBOARDS dashboards"
set xlabel "minutes"
set xrange [0:$MINUTES]
set ylabel "relay RSS (MiB)"
set y2label "open fds, agents connected"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set key bottom right
set grid
do for [k in "$kills"] { set arrow from first k, graph 0 to first k, graph 1 nohead lc rgb "#cc0000" dt 2 }
do for [k in "$stops"] { set arrow from first k, graph 0 to first k, graph 0.08 nohead lc rgb "#777777" lw 2 }
plot "$OUT/samples.csv" every ::1 using (\$1/60):(\$3/1024) axes x1y1 with lines lw 2 lc rgb "#1f77b4" title "relay RSS (MiB)", \
     "" every ::1 using (\$1/60):4 axes x1y2 with lines lc rgb "#2ca02c" title "relay open fds", \
     "" every ::1 using (\$1/60):5 axes x1y2 with lines lc rgb "#ff7f0e" dt 3 title "loadgen agents connected", \
     NaN with lines lc rgb "#cc0000" dt 2 title "relay killed", \
     NaN with lines lc rgb "#777777" lw 2 title "real agent stopped"
EOF
    echo "plot: $PLOT" >&2
fi

status=0
[ "$lost" = 0 ] || { echo "FAIL: $lost samples lost outside restarts" >&2; status=1; }
[ "$registry_ok" = 1 ] || { echo "FAIL: the registry changed" >&2; status=1; }
[ "$memory_ok" = 1 ] || { echo "FAIL: the relay's RSS or fds did not return near the baseline" >&2; status=1; }
[ "$fleet_back" = true ] || { echo "FAIL: the fleet did not come back after every restart" >&2; status=1; }
if [ "$real_never" != 0 ] || [ "$final_real" != "$REAL_AGENTS" ]; then
    echo "FAIL: a real agent did not come back" >&2
    status=1
fi
[ "$end_t" != 0 ] || { echo "FAIL: the whole fleet was never connected at the end" >&2; status=1; }
# The last command: its status is the script's.
[ "$status" = 0 ]
