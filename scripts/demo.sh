#!/bin/sh
# One-command demo: a relay on 127.0.0.1, this machine registered with it,
# and this machine's agent streaming to it. Prints the dashboard URL; Ctrl-C
# (or SIGTERM) stops both.
#
#   ./scripts/demo.sh [--no-build]
#
# Environment:
#   VSTATS_DEMO_PORT   relay port (default 3001)
#   VSTATS_DEMO_DIR    registry, token and logs (default ./demo-state); kept
#                      between runs, so this machine is registered only once
#   VSTATS_RELAY_BIN   relay binary (default target/release/vstats-relay)
#   VSTATS_AGENT_BIN   agent binary (default target/release/vstats-agent)
set -eu

usage() {
    sed -n '2,14s/^# \{0,1\}//p' "$0"
}

build=1
for arg in "$@"; do
    case "$arg" in
    --no-build) build=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "demo: unknown option: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
port=${VSTATS_DEMO_PORT:-3001}
dir=${VSTATS_DEMO_DIR:-./demo-state}
relay_bin=${VSTATS_RELAY_BIN:-target/release/vstats-relay}
agent_bin=${VSTATS_AGENT_BIN:-target/release/vstats-agent}

if [ "$build" = 1 ]; then
    cargo build --release --bin vstats-relay --bin vstats-agent
fi
for bin in "$relay_bin" "$agent_bin"; do
    if [ ! -x "$bin" ]; then
        echo "demo: $bin not found; run without --no-build" >&2
        exit 1
    fi
done

# The directory holds an agent token: only its owner may read it.
umask 077
mkdir -p "$dir"
chmod 700 "$dir"
state="$dir/relay.json"
token_file="$dir/agent.token"
id_file="$dir/server.id"

# Register this machine unless an earlier run did (and the registry still
# has it). The token is shown only once, at `add`: keep it in the file the
# agent reads.
registered() {
    [ -s "$token_file" ] && [ -s "$id_file" ] &&
        "$relay_bin" server list --json --state "$state" 2>/dev/null |
        grep -q "\"id\":\"$(cat "$id_file")\""
}
if ! registered; then
    added=$("$relay_bin" server add --name "$(uname -n)" --location local --json --state "$state")
    printf '%s\n' "$added" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' >"$token_file"
    printf '%s\n' "$added" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' >"$id_file"
    if [ ! -s "$token_file" ] || [ ! -s "$id_file" ]; then
        echo "demo: unexpected output from 'server add': $added" >&2
        exit 1
    fi
fi

relay_pid=""
agent_pid=""
# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
    trap - EXIT INT TERM
    # SIGTERM: the agent sends a close frame and exits 0; then the relay,
    # with nothing left to close, exits at once.
    for pid in $agent_pid $relay_pid; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

relay_log="$dir/relay.log"
agent_log="$dir/agent.log"
# The caller's VSTATS_* settings (TLS, a viewer token, another token) would
# turn this into a different setup than the URL printed below: drop them.
unset VSTATS_TLS_CERT VSTATS_TLS_KEY VSTATS_VIEWER_TOKEN VSTATS_ALLOW_ORIGIN \
    VSTATS_TOKEN VSTATS_SERVER VSTATS_CA_FILE
"$relay_bin" --listen "127.0.0.1:$port" --state "$state" 2>"$relay_log" &
relay_pid=$!

# Wait (10 s at most) for the relay to listen: a taken port makes it exit.
tries=0
until grep -q "listening on" "$relay_log" 2>/dev/null; do
    if ! kill -0 "$relay_pid" 2>/dev/null || [ "$tries" -ge 100 ]; then
        echo "demo: the relay did not start on 127.0.0.1:$port:" >&2
        cat "$relay_log" >&2
        exit 1
    fi
    tries=$((tries + 1))
    sleep 0.1
done

# The token goes by file, named in the environment: neither argv nor the
# environment holds the token itself.
VSTATS_TOKEN_FILE="$token_file" "$agent_bin" --server "ws://127.0.0.1:$port" 2>"$agent_log" &
agent_pid=$!

echo "vstats demo: dashboard at http://127.0.0.1:$port/"
echo "  logs: $relay_log, $agent_log; press Ctrl-C to stop"

# Until a signal, or until the relay or the agent exits on its own.
while kill -0 "$relay_pid" 2>/dev/null && kill -0 "$agent_pid" 2>/dev/null; do
    sleep 1
done
echo "demo: a process exited; see $relay_log and $agent_log" >&2
exit 1
