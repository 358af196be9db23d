#!/bin/sh
# History database benchmark: a relay with a year of history for a fleet
# (made up by examples/history-gen.rs: minutes for a day, quarter hours for
# 31 days, hours for a year, and the days of traffic), measured on loopback:
#
#   1. query latency: GET /api/servers/{id}/history?range=7d, 30d and 1y
#      (JSON), QUERIES requests each, one at a time, each for a server drawn
#      at random; p50, p99 and the worst, connect to last byte;
#   2. the fleet beside queries: AGENTS agents at 1 Hz and DASHBOARDS
#      dashboards (examples/loadgen.rs, as in bench-relay.sh) in two
#      windows of WINDOW seconds, first with no queries, then with CLIENTS
#      clients asking for range=1y in a loop; for each window the agents'
#      delivery latency to the dashboards (loadgen's p50/p99), /healthz's
#      latency (asked every HEALTHZ_MS), the relay's CPU and RSS, and in
#      the second the queries answered and their latency;
#   3. the database's size: the bytes of the file the generator wrote, per
#      server (a server's year), per row, and on disk after the run.
#
# The relay runs alone on CPU 1 (its event loop and its database threads
# together, as on a one-core box) and everything else on CPU 0 (taskset,
# when there is one and at least two CPUs), as in bench-idle.sh. The query
# clients share CPU 0 with the load generator, so the second window's
# loadgen CPU and worst send lag are shown beside its latency.
#
#   scripts/bench-history.sh               # 1,000 servers of a year, about 3 minutes
#   SERVERS=50 AGENTS=100 WINDOW=10 QUERIES=20 QUIET_WAIT=2 scripts/bench-history.sh
#
# Knobs (environment):
#   SERVERS     servers registered, each with DAYS of history (default 1000)
#   DAYS        days of history in the hours (default 366)
#   AGENTS      agents at 1 Hz in both windows, at most SERVERS (default
#               SERVERS)
#   DASHBOARDS  dashboards watching the fleet (default 5)
#   WINDOW      length of each of the two windows, seconds (default 30)
#   QUERIES     requests per range for the query latency (default 200)
#   CLIENTS     clients asking range=1y in a loop in the second window
#               (default 20)
#   HEALTHZ_MS  between two /healthz requests, milliseconds (default 20)
#   QUIET_WAIT  longest wait for a quiet machine before each measurement,
#               seconds (default 30)
#   VSTATS_RELAY_BIN  the relay to measure (default: the release build,
#               built here)
#   OUT         where the raw figures go (default target/bench-history)
#
# Prints Markdown tables for BENCHMARKS.md; the generator's and the load
# generator's output, each client's JSON line, the relay's /metrics at the
# end and its log are kept in $OUT. Needs python3 (the HTTP clients) and
# about 0.8 MB of disk a server in $TMPDIR.
set -eu
cd "$(dirname "$0")/.."

SERVERS=${SERVERS:-1000}
DAYS=${DAYS:-366}
AGENTS=${AGENTS:-$SERVERS}
DASHBOARDS=${DASHBOARDS:-5}
WINDOW=${WINDOW:-30}
QUERIES=${QUERIES:-200}
CLIENTS=${CLIENTS:-20}
HEALTHZ_MS=${HEALTHZ_MS:-20}
QUIET_WAIT=${QUIET_WAIT:-30}
OUT=${OUT:-target/bench-history}
if [ "$AGENTS" -gt "$SERVERS" ]; then
    echo "(AGENTS=$AGENTS is more than the $SERVERS servers: $SERVERS agents)" >&2
    AGENTS=$SERVERS
fi

work=$(mktemp -d)
relay_pid="" clients_pid="" prober_pid=""
cleanup() {
    for pid in $clients_pid $prober_pid $relay_pid; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.out "$OUT"/metrics.txt "$OUT"/relay.log

# --- Binaries ---------------------------------------------------------------------
target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --release --locked --bin vstats-relay --example loadgen --example history-gen
relay_bin=${VSTATS_RELAY_BIN:-$target/release/vstats-relay}
loadgen=$target/release/examples/loadgen
generator=$target/release/examples/history-gen

# shellcheck source=scripts/bench-lib.sh disable=SC1091 # followed with -x
. scripts/bench-lib.sh

# --- History ----------------------------------------------------------------------
echo "history: $SERVERS servers, $DAYS days (examples/history-gen)" >&2
"$generator" --state "$work/state.json" --servers "$SERVERS" --days "$DAYS" \
    --tokens "$work/tokens" >"$OUT/history-gen.out"
tail -n 1 "$OUT/history-gen.out" >"$OUT/history-gen.json"
sed '$d' "$OUT/history-gen.out" | sed 's/^/    /' >&2

# --- Pinning ----------------------------------------------------------------------
pin_relay_apart
PINNED_RELAY=$relay_bin
export PINNED_RELAY

# --- Clients ----------------------------------------------------------------------
# One small HTTP client, three ways: latency (requests one at a time),
# load (threads asking in a loop) and healthz (a request every so often).
# Each prints one JSON line; a request is timed from connect to last byte,
# and anything but a 200 counts as an error.
cat >"$work/client.py" <<'EOF'
import http.client, json, math, random, sys, threading, time

def get(addr, path):
    host, port = addr.rsplit(":", 1)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        status, size = response.status, len(response.read())
    except (OSError, http.client.HTTPException):
        status, size = 0, 0
    finally:
        conn.close()
    return time.perf_counter() - start, status, size

def report(done, seconds, **extra):
    ok = sorted(t * 1000 for t, status, _ in done if status == 200)
    def pct(p):
        return round(ok[max(0, math.ceil(p / 100 * len(ok)) - 1)], 3) if ok else None
    sizes = [size for _, status, size in done if status == 200]
    figures = {"requests": len(done), "errors": len(done) - len(ok),
               "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": pct(100),
               "per_s": round(len(ok) / seconds, 2) if seconds else None,
               "bytes_mean": round(sum(sizes) / len(sizes)) if sizes else None}
    figures.update(extra)
    print(json.dumps(figures, separators=(",", ":")))

def ids(state):
    with open(state) as f:
        return [server["id"] for server in json.load(f)["servers"]]

def history(servers, rng, range_):
    return "/api/servers/%s/history?range=%s" % (rng.choice(servers), range_)

mode, addr = sys.argv[1], sys.argv[2]
if mode == "latency":
    state, range_, n = sys.argv[3], sys.argv[4], int(sys.argv[5])
    servers, rng = ids(state), random.Random(range_)
    start = time.perf_counter()
    done = [get(addr, history(servers, rng, range_)) for _ in range(n)]
    report(done, time.perf_counter() - start, range=range_)
elif mode == "load":
    state, range_, clients = sys.argv[3], sys.argv[4], int(sys.argv[5])
    delay, window = float(sys.argv[6]), float(sys.argv[7])
    servers = ids(state)
    t0 = time.perf_counter()
    counted = []
    def loop(k):
        rng, mine = random.Random(k), []
        while True:
            at = time.perf_counter() - t0
            if at >= delay + window:
                break
            result = get(addr, history(servers, rng, range_))
            if at >= delay:
                mine.append(result)
        counted.extend(mine)
    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report(counted, window, range=range_, clients=clients)
elif mode == "healthz":
    delay, window, every = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]) / 1000
    time.sleep(delay)
    start = time.perf_counter()
    done, due = [], start
    while due < start + window:
        done.append(get(addr, "/healthz"))
        due += every
        time.sleep(max(0.0, due - time.perf_counter()))
    report(done, window)
EOF

# --- Relay ------------------------------------------------------------------------
launch_relay plain --state "$work/state.json" --log-level warn
# shellcheck disable=SC2154 # $url is launch_relay's (bench-lib.sh)
addr=${url#ws://}
client() { python3 "$work/client.py" "$@"; }

# --- 1. Query latency -------------------------------------------------------------
for range in 7d 30d 1y; do
    wait_quiet
    echo "queries: range=$range, $QUERIES one at a time" >&2
    client latency "$addr" "$work/state.json" "$range" "$QUERIES" >"$OUT/query-$range.json"
    sed 's/^/    /' "$OUT/query-$range.json" >&2
done

# --- 2. The fleet, without and with queries ---------------------------------------
ramp=$((AGENTS / 2000 + 1))
# The loadgen's window starts after its ramp and a second's settling.
delay=$((ramp + 1))
# phase NAME: a loadgen run of WINDOW seconds with /healthz probed
# throughout its window; its JSON line in $OUT/fleet-NAME.json.
phase() {
    name=$1
    client healthz "$addr" "$delay" "$WINDOW" "$HEALTHZ_MS" >"$OUT/healthz-$name.json" &
    prober_pid=$!
    "$loadgen" --relay "$url" --tokens "$work/tokens" --relay-pid "$relay_pid" \
        --agents "$AGENTS" --dashboards "$DASHBOARDS" --rate 1 --ramp "$ramp" \
        --duration "$WINDOW" >"$OUT/fleet-$name.out"
    tail -n 1 "$OUT/fleet-$name.out" >"$OUT/fleet-$name.json"
    sed '$d' "$OUT/fleet-$name.out" | sed 's/^/    /' >&2
    wait "$prober_pid"
    prober_pid=""
    sed 's/^/    healthz: /' "$OUT/healthz-$name.json" >&2
}

wait_quiet
echo "fleet: $AGENTS agents at 1 Hz, $DASHBOARDS dashboards, $WINDOW s, no queries" >&2
phase quiet
# The agents of the first window gone before the second starts.
sleep 2
wait_quiet
echo "fleet: the same, with $CLIENTS clients asking range=1y in a loop" >&2
client load "$addr" "$work/state.json" 1y "$CLIENTS" "$delay" "$WINDOW" >"$OUT/load-1y.json" &
clients_pid=$!
phase queries
wait "$clients_pid"
clients_pid=""
sed 's/^/    queries: /' "$OUT/load-1y.json" >&2

# --- 3. Size, and what the relay says ---------------------------------------------
curl -s --max-time 10 "http://$addr/metrics" >"$OUT/metrics.txt" || true
stop_relay
cp "$work/relay.log" "$OUT/relay.log"
db=$work/state.db
on_disk=$(($(stat -c %s "$db") + $(stat -c %s "$db-wal" 2>/dev/null || echo 0)))

# --- Report -----------------------------------------------------------------------
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN { if (v == "" || v == "null") print "n/a"; else printf "%.*f\n", d, v }'; }
# thousands N: N with commas.
thousands() { echo "$1" | sed ':a; s/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/; ta'; }
metric() { awk -v k="$1" '$1 == k { printf "%.0f\n", $2 }' "$OUT/metrics.txt"; }
g=$OUT/history-gen.json
db_bytes=$(field db_bytes "$g")
per_server=$(fmt "$(field bytes_per_server "$g")" 0)
warnings=$(grep -c -E '^(WARN|ERROR)' "$OUT/relay.log" || true)
pinned=""
[ -n "$pin_relay" ] && pinned=" The relay on CPU 1, everything else on CPU 0."

echo
echo "History: $SERVERS servers with $DAYS days of made-up history each (examples/history-gen, $(fmt "$(field seconds "$g")") s to write).$pinned"
echo
echo "| database | value |"
echo "|---|---|"
echo "| rows | $(thousands "$(field rows "$g")") (minutes $(thousands "$(field rows_minutes "$g")"), quarters $(thousands "$(field rows_quarters "$g")"), hours $(thousands "$(field rows_hours "$g")"), days $(thousands "$(field rows_days "$g")")) |"
echo "| file as written | $(thousands "$db_bytes") bytes ($(fmt "$(awk -v b="$db_bytes" 'BEGIN { print b / 1048576 }')") MiB) |"
echo "| a server's year | $(thousands "$per_server") bytes ($(fmt "$(awk -v b="$per_server" 'BEGIN { print b / 1024 }')") KiB) |"
echo "| a row | $(fmt "$(field bytes_per_row "$g")") bytes |"
echo "| on disk after the run (with the WAL) | $(thousands "$on_disk") bytes |"
echo
echo "| query, $QUERIES one at a time, random servers | p50 | p99 | max | body | errors |"
echo "|---|---|---|---|---|---|"
for range in 7d 30d 1y; do
    q=$OUT/query-$range.json
    echo "| range=$range | $(fmt "$(field p50_ms "$q")" 2) ms | $(fmt "$(field p99_ms "$q")" 2) ms | $(fmt "$(field max_ms "$q")" 2) ms | $(thousands "$(field bytes_mean "$q")") B | $(field errors "$q") |"
done
echo
# row TITLE KEY FILE-PREFIX DIGITS [UNIT]: the two windows side by side.
row() {
    title=$1 key=$2 prefix=$3 digits=$4 unit=${5:-}
    echo "| $title | $(fmt "$(field "$key" "$OUT/$prefix-quiet.json")" "$digits")$unit | $(fmt "$(field "$key" "$OUT/$prefix-queries.json")" "$digits")$unit |"
}
delivered() {
    f=$OUT/fleet-$1.json
    awk -v s="$(field samples_sent_in_window "$f")" -v g="$(field received_per_dashboard_min "$f")" \
        'BEGIN { if (s > 0) printf "%.2f %%\n", g / s * 100; else print "n/a" }'
}
l=$OUT/load-1y.json
echo "| $AGENTS agents at 1 Hz, $DASHBOARDS dashboards, $WINDOW s | no queries | $CLIENTS clients asking range=1y |"
echo "|---|---|---|"
row "delivery p50" p50 fleet 2 " ms"
row "delivery p99" p99 fleet 2 " ms"
row "delivery max" max fleet 1 " ms"
echo "| delivered (worst dashboard) | $(delivered quiet) | $(delivered queries) |"
row "/healthz p50 (every $HEALTHZ_MS ms)" p50_ms healthz 2 " ms"
row "/healthz p99" p99_ms healthz 2 " ms"
row "/healthz max" max_ms healthz 1 " ms"
row "/healthz errors" errors healthz 0
echo "| range=1y answered | - | $(fmt "$(field per_s "$l")") /s, p50 $(fmt "$(field p50_ms "$l")") ms, p99 $(fmt "$(field p99_ms "$l")") ms, $(field errors "$l") errors |"
row "relay CPU (% of a core)" relay_cpu_percent fleet 1
row "relay RSS (KiB)" relay_rss_kib fleet 0
row "loadgen CPU (% of a core)" loadgen_cpu_percent fleet 1
row "loadgen worst send lag" loadgen_worst_send_lag_ms fleet 1 " ms"
row "other CPU (% of a core)" others_cpu_percent fleet 1
echo
echo "Relay at the end: $(thousands "$(metric vstats_relay_history_queries_total)") history queries, $(metric 'vstats_relay_history_rows_total{result="written"}') minutes written, $(metric 'vstats_relay_history_rows_total{result="dropped"}') dropped, $(metric vstats_relay_history_write_errors_total) write errors; $warnings warnings or errors in its log ($OUT/relay.log)."
