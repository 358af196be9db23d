#!/bin/sh
# One agent floods the relay with small samples for 4 s while a calm agent
# sends one every 100 ms, a dashboard watches and /healthz is asked every
# 20 ms: prints /healthz's median and worst latency, the dashboard's largest
# gap between the calm agent's samples, and the relay's RSS, for the release
# build of the relay. The test behind it is tests/relay_fairness.rs.
#
# The relay runs alone on CPU 1 and everything else (the flooder, the
# clients, cargo) on CPU 0: sharing a CPU with its flooder, a relay that
# gave the flood too many turns would be starved by it and hide it.
#
#   scripts/bench-flood.sh [RUNS]          # default 3 runs
#   VSTATS_RELAY_BIN=/path/to/vstats-relay scripts/bench-flood.sh
#   VSTATS_FLOOD_BYTES=60000 scripts/bench-flood.sh   # samples of 60 KB
set -eu
cd "$(dirname "$0")/.."
runs=${1:-3}
pinned=$(mktemp)
trap 'rm -f "$pinned"' EXIT
printf '#!/bin/sh\nexec taskset -c 1 "$@"\n' >"$pinned"
chmod +x "$pinned"
export VSTATS_TEST_RUNNER="$pinned"
if [ -z "${VSTATS_RELAY_BIN:-}" ]; then
    cargo build --quiet --release --locked --bin vstats-relay
    VSTATS_RELAY_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/vstats-relay
fi
export VSTATS_RELAY_BIN
cargo test --quiet --locked --test integration --no-run
i=0
while [ "$i" -lt "$runs" ]; do
    i=$((i + 1))
    taskset -c 0 cargo test --quiet --locked --test integration relay_fairness::a_flooding_agent -- --nocapture 2>&1 | grep '^flood:' || true
done
