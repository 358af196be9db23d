# shellcheck shell=sh disable=SC2154
# What the relay benchmarks (bench-relay.sh, bench-deaf.sh) share; sourced,
# not run. The caller sets $relay (the binary) and $work (a scratch folder),
# and QUIET_WAIT for wait_quiet (hence SC2154 off: they are the caller's).

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
