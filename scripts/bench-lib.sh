# shellcheck shell=sh disable=SC2154
# What the relay benchmarks (bench-relay.sh, bench-deaf.sh, soak.sh) share; sourced,
# not run. The caller sets $relay (the binary) and $work (a scratch folder),
# and QUIET_WAIT for wait_quiet (hence SC2154 off: they are the caller's).

# pin_relay_apart: the relay on CPU 1, everything else on CPU 0, when
# taskset and two CPUs are there. Sets $relay to $work/relay, a wrapper
# that execs $PINNED_RELAY (exported by the caller before launch_relay) on
# CPU 1, so that $! is the relay's pid; sets $pin_relay and $pin_loadgen
# (empty when nothing is pinned) and pins this shell to CPU 0.
# shellcheck disable=SC2034 # $pin_loadgen and $relay are the caller's to use
pin_relay_apart() {
    pin_relay="" pin_loadgen=""
    if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
        pin_relay="taskset -c 1"
        pin_loadgen="taskset -c 0"
        taskset -p -c 0 $$ >/dev/null
    else
        echo "(no taskset or a single CPU: the relay and its clients are not pinned)" >&2
    fi
    # shellcheck disable=SC2016 # expanded by the wrapper
    printf '#!/bin/sh\nexec %s "$PINNED_RELAY" "$@"\n' "$pin_relay" >"$work/relay"
    chmod +x "$work/relay"
    relay=$work/relay
}

# tls_material: a throwaway CA and a P-256 certificate for 127.0.0.1 in
# $work (ca.pem, cert.pem, key.pem), as a small deployment would have.
tls_material() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=vstats-bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj /CN=127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/cert.ext"
    openssl x509 -req -in "$work/cert.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
        -CAcreateserial -days 2 -extfile "$work/cert.ext" -out "$work/cert.pem" 2>/dev/null
}

# registry_material N: N servers' tokens (256 random bits as 64 hex digits,
# as `server add` makes them), ids and token hashes, one a line, in
# $work/tokens, $work/ids and $work/hashes. `server add` rewrites and
# fsyncs the whole state file each time, so a fleet's registry is written
# directly in its documented format (src/relay/registry.rs: 12-hex-digit
# ids, the SHA-256 of each token's text as 64 lowercase hex digits).
registry_material() {
    od -An -tx1 -v -N $((32 * $1)) /dev/urandom | tr -d ' \n' | fold -w64 >"$work/tokens"
    echo >>"$work/tokens"
    od -An -tx1 -v -N $((6 * $1)) /dev/urandom | tr -d ' \n' | fold -w12 >"$work/ids"
    echo >>"$work/ids"
    if [ "$(sort -u "$work/ids" | wc -l)" -ne "$1" ]; then
        echo "error: two random server ids collided; run again" >&2
        exit 1
    fi
    # sha256sum hashes files, so one file per token, hashed in one process.
    mkdir "$work/t"
    i=0
    while IFS= read -r token; do
        i=$((i + 1))
        printf %s "$token" >"$work/t/$i"
    done <"$work/tokens"
    seq "$1" | sed "s|^|$work/t/|" | xargs sha256sum | cut -d' ' -f1 >"$work/hashes"
    rm -r "$work/t"
}

# state_file N: $work/state.json, a registry of the first N servers of
# registry_material.
state_file() {
    paste -d' ' "$work/ids" "$work/hashes" | head -n "$1" | awk '
        BEGIN { printf "{\"version\":1,\"servers\":[" }
        {
            printf "%s{\"id\":\"%s\",\"name\":\"bench-%d\",\"location\":\"loopback\",", (NR > 1 ? "," : ""), $1, NR
            printf "\"token_sha256\":\"%s\",\"created\":\"2024-01-01T00:00:00Z\"}", $2
        }
        END { print "]}" }' >"$work/state.json"
}

# launch_relay plain|tls ARGS...: starts $relay with ARGS (and the
# certificate of tls_material for tls) on a port of its choosing, logging to
# $work/relay.log; sets relay_pid and url once it listens.
launch_relay() {
    if [ "$1" = tls ]; then
        scheme=wss
        shift
        set -- "$@" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
    else
        scheme=ws
        shift
    fi
    "$relay" --listen 127.0.0.1:0 "$@" 2>>"$work/relay.log" &
    relay_pid=$!
    port=""
    for _ in $(seq 100); do
        port=$(ss -Hltnp 2>/dev/null | awk -v p="pid=$relay_pid," 'index($0, p) { n = split($4, a, ":"); print a[n] }')
        [ -n "$port" ] && break
        sleep 0.05
    done
    if [ -z "$port" ]; then
        echo "error: the relay did not start:" >&2
        cat "$work/relay.log" >&2
        exit 1
    fi
    # shellcheck disable=SC2034 # read by the caller
    url="$scheme://127.0.0.1:$port"
}

stop_relay() {
    kill -TERM "$relay_pid"
    wait "$relay_pid" || true
    relay_pid=""
}

# Other work on a shared machine takes the cores from under the relay and
# shows as latency: wait_quiet waits (at most QUIET_WAIT seconds) for the
# machine to be nearly idle.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
wait_quiet() {
    hz=$(getconf CLK_TCK)
    waited=0
    while [ "$waited" -lt "$QUIET_WAIT" ]; do
        ticks0=$(busy_ticks)
        sleep 1
        waited=$((waited + 1))
        # Busy below a quarter of one core over that second.
        [ $(($(busy_ticks) - ticks0)) -lt $((hz / 4)) ] && return
    done
    echo "    (the machine stayed busy for ${QUIET_WAIT} s; running anyway)" >&2
}

# field KEY FILE...: a field of flat JSON lines (a number, true, false or
# null); the loadgen's keys are unique within a line.
field() {
    key=$1
    shift
    sed -n "s/.*\"$key\":\([-0-9.e+a-z]*\).*/\1/p" "$@"
}
