#!/bin/sh
# Fuzzes every target in fuzz/ (cargo-fuzz, nightly) for MINUTES minutes
# each (default 10), then prints a table of executions and coverage.
#
#   scripts/fuzz.sh [MINUTES]
#
# FUZZ_JOBS=2 runs two targets at once; FUZZ_TARGETS="a b" runs only those;
# FUZZ_RSS_MB caps each run's memory (default 2048). Seeds come from the
# fixture trees (tests/fixtures, ../shared/fixtures or
# VSTATS_SHARED_FIXTURES), tests/golden and the examples below; new inputs
# are merged into fuzz/corpus/<target> and minimized (cargo fuzz cmin).
# Crashes land in fuzz/artifacts/<target>/ and make the exit status 1: fix
# the bug, move the input to fuzz/regressions/<target>/ and add a test.
set -eu

minutes=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz=$root/fuzz
work=$fuzz/work
shared=${VSTATS_SHARED_FIXTURES:-$root/../shared/fixtures}
jobs=${FUZZ_JOBS:-1}
rss=${FUZZ_RSS_MB:-2048}
targets=${FUZZ_TARGETS:-"proc_files http_head relay_frames registry agent_config relay_config"}
# Release, with debug assertions and overflow checks; no sanitizer: the
# crate forbids unsafe code.
flags="-O -a -s none"
PATH=$root/.tools/bin:$PATH
export PATH

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked --root "$root/.tools" cargo-fuzz
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi

# ----- seeds ---------------------------------------------------------------

# The selector byte of each parser: the order of `ProcFile::ALL` in
# src/fuzzing.rs.
selector() {
    case $1 in
        */proc/stat) echo 0 ;;
        */proc/cpuinfo) echo 1 ;;
        */proc/meminfo) echo 2 ;;
        */proc/diskstats) echo 3 ;;
        */net/dev) echo 4 ;;
        */net/sockstat | */net/sockstat6) echo 5 ;;
        */proc/loadavg) echo 6 ;;
        */proc/uptime) echo 7 ;;
        */kernel/hostname | */kernel/osrelease) echo 8 ;;
        */os-release | */openwrt_release) echo 9 ;;
        */proc/mounts) echo 10 ;;
        */temp | *_input) echo 11 ;;
        */name | */type | *_label) echo 12 ;;
        *) return 1 ;;
    esac
}

byte() {
    # shellcheck disable=SC2059 # the format is the point
    printf "\\$(printf %o "$1")"
}

# The file $1 as a masked client text frame with a zero mask key (so the
# payload reads as is), as tungstenite, acting as a server, expects.
ws_frame() {
    len=$(wc -c <"$1")
    byte 129
    if [ "$len" -lt 126 ]; then
        byte $((128 + len))
    elif [ "$len" -lt 65536 ]; then
        byte 254
        byte $((len / 256))
        byte $((len % 256))
    else
        return 1
    fi
    printf '\0\0\0\0'
    cat "$1"
}

seed_proc_files() {
    out=$work/proc_files
    trees="$root/tests/fixtures"
    [ -d "$shared" ] && trees="$trees $shared"
    n=0
    # shellcheck disable=SC2086 # two directories
    find $trees -type f | sort >"$work/files"
    # shellcheck disable=SC2094 # the list is only read
    while read -r file; do
        sel=$(selector "$file") || continue
        n=$((n + 1))
        { byte "$sel"; cat "$file"; } >"$out/seed-$n"
        # Two readings, for the parsers that keep state: this machine's
        # file after another machine's of the same kind.
        case $sel in 0 | 3 | 4)
            other=$(grep "/${file#*/proc/}\$" "$work/files" | grep -vF "$file" | head -n 1)
            if [ -n "$other" ]; then
                { byte "$sel"; cat "$other"; byte 255; cat "$file"; } >"$out/seed-$n-pair"
            fi
            ;;
        esac
        case $file in */net/sockstat)
            [ -f "${file}6" ] && { byte 5; cat "$file"; byte 255; cat "${file}6"; } >"$out/seed-$n-v6"
            ;;
        esac
        case $file in */proc/cpuinfo)
            machine=${file%/proc/cpuinfo}
            for model in "$machine/proc/device-tree/model" \
                "$machine/sys/firmware/devicetree/base/model"; do
                [ -f "$model" ] && { byte 1; cat "$model"; byte 255; cat "$file"; } >"$out/seed-$n-model"
            done
            ;;
        esac
    done <"$work/files"
    # Names as the directories list them.
    { byte 12; printf 'thermal_zone0\nthermal_zone12\nhwmon3\ntemp1_input\ntemp10_input\n1\n4242\nself\n'; } >"$out/seed-names"
}

seed_http_head() {
    out=$work/http_head
    upgrade='Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'
    printf 'GET / HTTP/1.1\r\nHost: relay.lan:3001\r\n\r\n' >"$out/page"
    printf 'HEAD /metrics HTTP/1.0\r\n\r\n' >"$out/head"
    printf 'GET /ws/agent HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer 0123abcd\r\n%b\r\n' "$upgrade" >"$out/agent"
    printf 'GET /ws/agent?token=a%%2Bb+c&x=1 HTTP/1.1\r\nHost: relay\r\n%b\r\n' "$upgrade" >"$out/agent-query"
    printf 'GET /ws?viewer=v%%41 HTTP/1.1\r\nHost: relay.lan\r\nOrigin: https://relay.lan\r\n%b\r\n' "$upgrade" >"$out/dashboard"
    printf 'GET /dl/vstats-agent-x86_64 HTTP/1.1\r\nHost: r\r\n\r\nrest' >"$out/dist"
    printf 'POST /api/servers HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}' >"$out/post"
    printf 'GET /api/servers?viewer=x HTTP/1.1\r\nAuthorization: bearer  x \r\n\r\n' >"$out/servers"
}

seed_relay_frames() {
    out=$work/relay_frames
    patch='{"type":"patch","data":{"elapsed_ms":1000,"cpu":{"usage":7.5},"memory":{"available":100},"network":{"interfaces":[{"rx_bytes":2000}]},"disks":[{"used":5}],"temperatures":[{"celsius":40.5}]}}'
    for golden in "$root"/tests/golden/*.json; do
        name=$(basename "$golden" .json)
        { printf '{"type":"metrics","data":'; cat "$golden"; printf '}'; } >"$work/sample"
        # Text frames: a sample, patches, a heartbeat, an unknown type.
        {
            byte 101
            cat "$work/sample"
            byte 255
            printf '%s' "$patch"
            byte 255
            printf '{"type":"patch","data":{"elapsed_ms":500}}'
            byte 255
            printf '{"type":"heartbeat"}'
        } >"$out/text-$name"
        # The same sample as WebSocket frames, read in 7-byte chunks.
        { byte 2; ws_frame "$work/sample"; } >"$out/raw-$name" || rm -f "$out/raw-$name"
    done
    printf '%s' "$patch" >"$work/patch"
    { byte 0; ws_frame "$work/patch"; printf '\211\200\0\0\0\0\210\202\0\0\0\0\3\350'; } >"$out/raw-ping-close"
    { byte 1; printf '{"type":"metrics","data":{"hostname":"h","cpu":{"usage":1}}}'; byte 255; printf '%s' "$patch"; } >"$out/text-small"
}

seed_registry() {
    out=$work/registry
    hash=33cc09ba35314d19e32ed9a5a30fca56eebbfab5faec7247fd0403cd26e155b5
    printf '{"version":1,"servers":[]}\n' >"$out/empty"
    printf '{\n  "version": 1,\n  "servers": [\n    {\n      "id": "3f2a9c0b1d4e",\n      "name": "pi",\n      "location": "上海",\n      "token_sha256": "%s",\n      "created": "2024-01-01T12:00:00Z"\n    }\n  ]\n}\n' "$hash" >"$out/one"
    printf '{"version":1,"servers":[{"id":"0123456789ab","name":"fuzz","location":"","token_sha256":"%s","created":"x"},{"id":"ba9876543210","name":"router \\"lan\\"","location":"attic","token_sha256":"%s","created":"2025-06-01T00:00:00Z"}]}' \
        "$hash" "0000000000000000000000000000000000000000000000000000000000000000" >"$out/two"
    printf '{"version":2,"servers":[]}' >"$out/version"
}

seed_agent_config() {
    out=$work/agent_config
    printf -- '--server\0wss://relay.example:3001\0--token\0abc' >"$out/run"
    printf -- '-s\0ws://[::1]:8080/vstats/ws/agent?x=1\0-t\0t\0--token-in-query\0--interval\0 2.5 ' >"$out/query"
    printf -- '--once\0--path-procfs\0tests/fixtures/x/proc\0--net-interfaces\0eth0, wlan0\0--log-level\0debug' >"$out/once"
    printf -- '--full-samples\0\0VSTATS_SERVER=ws://relay:3001\0VSTATS_TOKEN= tok \0VSTATS_FULL_SAMPLES=yes\0VSTATS_INTERVAL=0.1' >"$out/env"
}

seed_relay_config() {
    out=$work/relay_config
    printf -- '--notify-url\0https://ntfy.sh/topic\0--notify-template\0{{event}}: {{message}}\0--alert\0disk>=90 for 5m' >"$out/ntfy"
    printf -- '--notify-url\0https://discord.com/api/webhooks/1/x\0--notify-template\0{"content": "{{message}}", "v": "{{value}} {{server.location}}"}\0--notify-after\00' >"$out/discord"
    printf -- 'notify\0test\0--notify-url\0http://[::1]:8080/hook?token=a#f\0--notify-ca-file\0ca.pem' >"$out/test"
    printf -- '--alert\0net_rx > 1.5M for 1h 30m\0--alert\0temperature<=-5\0--alert\0load1>=4\0\0VSTATS_NOTIFY_URL=http://a/, http://b/x\0VSTATS_NOTIFY_TEMPLATE=[{"t": "{{rule}}"}]' >"$out/rules"
    printf -- '--alert\0off\0\0VSTATS_ALERTS=cpu>=95%%, swap<1' >"$out/env"
    printf '{"version":1,"servers":{"3f2a9c0b1d4e":{"offline_since":1764637384,"firing":["disk>=90 for 5m"]}}}' >"$out/alerts"
}

# ----- runs ----------------------------------------------------------------

cd "$fuzz"
# shellcheck disable=SC2086 # flags are words
cargo +nightly fuzz build $flags

for target in $targets; do
    mkdir -p "$work/$target" "$fuzz/corpus/$target" "$fuzz/artifacts/$target"
    case $target in
        proc_files) seed_proc_files ;;
        http_head) seed_http_head ;;
        relay_frames) seed_relay_frames ;;
        registry) seed_registry ;;
        agent_config) seed_agent_config ;;
        relay_config) seed_relay_config ;;
    esac
done

run() {
    target=$1
    log=$work/$target.log
    # shellcheck disable=SC2086
    if cargo +nightly fuzz run $flags "$target" "$work/$target" "$fuzz/corpus/$target" -- \
        -max_total_time=$((minutes * 60)) -rss_limit_mb="$rss" -print_final_stats=1 \
        >"$log" 2>&1; then
        echo ok >"$work/$target.status"
    else
        echo crashed >"$work/$target.status"
    fi
}

running=0
for target in $targets; do
    echo "fuzzing $target for $minutes min"
    run "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait
        running=0
    fi
done
wait

# New inputs join the committed corpus, which is then minimized.
for target in $targets; do
    # shellcheck disable=SC2016 # expanded by the inner shell
    find "$work/$target" -type f -exec sh -c 'cp "$@" "$0"' "$fuzz/corpus/$target" {} +
    # Edges only, not hit counts: a few hundred small files a target.
    # shellcheck disable=SC2086
    cargo +nightly fuzz cmin $flags "$target" "$fuzz/corpus/$target" -- -use_counters=0 \
        >"$work/$target.cmin.log" 2>&1
done

# ----- summary -------------------------------------------------------------

failed=0
printf '\n%-14s %12s %8s %6s %7s %7s %9s  %s\n' target execs exec/s cov ft files bytes result
for target in $targets; do
    log=$work/$target.log
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    last=$(grep ' cov: ' "$log" | tail -n 1)
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    files=$(find "$fuzz/corpus/$target" -type f | wc -l)
    bytes=$(du -sb "$fuzz/corpus/$target" | cut -f1)
    status=$(cat "$work/$target.status")
    if [ "$status" != ok ]; then
        failed=1
        status="$status: $(grep -l . "$fuzz/artifacts/$target"/* 2>/dev/null | tail -n 1)"
    fi
    printf '%-14s %12s %8s %6s %7s %7s %9s  %s\n' "$target" "${execs:-?}" "${speed:-?}" \
        "${cov:-?}" "${ft:-?}" "$files" "$bytes" "$status"
done
exit "$failed"
