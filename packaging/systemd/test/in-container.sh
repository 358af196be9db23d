#!/bin/sh
# Runs as ci.service inside a Debian container booted by systemd-nspawn
# (tests/systemd.rs): the relay and agent units under a real PID 1, the
# installer piped from the relay, a crash, a reload, a token rotation and an
# uninstall. Prints one line per step; exits non-zero at the first failure,
# which the container hands back as systemd-nspawn's exit code.
#
# /vstats-ci holds what the harness copied in: the two binaries, the test CA
# (ca.pem) and the relay's certificate (cert.pem, key.pem), the relay's unit,
# and dist/ (install.sh, SHA256SUMS, the agent build for x86_64).
set -eu

CI=/vstats-ci
RELAY=https://127.0.0.1:3001
STATE=/var/lib/vstats-relay/vstats-relay.json
# curl trusts the test CA, as a user's curl trusts the relay's real one.
export CURL_CA_BUNDLE=$CI/ca.pem

step() {
    printf '== %s\n' "$*"
}

fail() {
    printf 'FAIL: %s\n' "$*"
    for unit in vstats-relay vstats-agent; do
        printf -- '-- journal of %s:\n' "$unit"
        journalctl -q --no-pager -u "$unit" | tail -n 30 || true
    done
    exit 1
}

# wait_until SECONDS DESCRIPTION COMMAND...: retries COMMAND every 0.2 s.
wait_until() {
    limit=$1 what=$2
    shift 2
    tries=$((limit * 5))
    while ! "$@" >/dev/null 2>&1; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || fail "not within ${limit}s: $what"
        sleep 0.2
    done
}

servers() {
    curl -fsS "$RELAY/api/servers"
}

# online ID: /api/servers lists ID as online (one server per line in the
# compact JSON is not guaranteed, so the object is cut out first).
online() {
    servers | tr '{' '\n' | grep "\"id\":\"$1\"" | grep -q '"online":true'
}

offline() {
    servers | tr '{' '\n' | grep "\"id\":\"$1\"" | grep -q '"online":false'
}

main_pid() {
    systemctl show -P MainPID "$1"
}

restarts() {
    systemctl show -P NRestarts "$1"
}

relay_cli() {
    VSTATS_STATE=$STATE /usr/local/bin/vstats-relay "$@"
}

# Everything on the root filesystem outside what the system itself churns.
file_list() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run \
        -o -path /tmp -o -path /var/tmp -o -path /var/log -o -path /var/cache \
        -o -path /var/lib/systemd -o -path /var/lib/private \
        -o -path /var/lib/vstats-relay -o -path "$CI" \) -prune -o -print | sort
}

step "relay: its unit starts under a DynamicUser with --dist-dir"
install -m 0755 "$CI/vstats-relay" /usr/local/bin/vstats-relay
install -m 0644 "$CI/vstats-relay.service" /etc/systemd/system/vstats-relay.service
install -d -m 0755 /etc/vstats
install -m 0644 "$CI/cert.pem" /etc/vstats/relay-cert.pem
install -m 0600 "$CI/key.pem" /etc/vstats/relay-key.pem
cat >/etc/vstats/relay.env <<EOF
VSTATS_RELAY_ARGS=--dist-dir $CI/dist --listen 127.0.0.1:3001
VSTATS_TLS_CERT=/etc/vstats/relay-cert.pem
EOF
# The key stays root-only: systemd hands the unprivileged relay a copy.
install -d /etc/systemd/system/vstats-relay.service.d
cat >/etc/systemd/system/vstats-relay.service.d/tls.conf <<'EOF'
[Service]
LoadCredential=tls-key:/etc/vstats/relay-key.pem
Environment=VSTATS_TLS_KEY=%d/tls-key
EOF
systemctl daemon-reload
systemctl enable --now vstats-relay
wait_until 10 "relay answers /healthz" curl -fsS "$RELAY/healthz"
[ "$(systemctl show -P User vstats-relay)" != root ] || fail "relay runs as root"

step "server add, then at once: curl .../install.sh | sh"
before_install=$(file_list)
added=$(relay_cli server add --name ci-box --location nspawn --json) ||
    fail "server add: $added"
id=$(printf '%s' "$added" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
token=$(printf '%s' "$added" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
if [ -z "$id" ] || [ -z "$token" ]; then
    fail "server add printed no id and token: $added"
fi
curl -fsS "$RELAY/install.sh" |
    sh -s -- --base-url "$RELAY/dl" --server wss://127.0.0.1:3001 --token "$token" \
        --ca-file "$CI/ca.pem" --interval 1 ||
    fail "install.sh"
systemctl is-active -q vstats-agent || fail "the agent unit is not active"
systemctl is-enabled -q vstats-agent || fail "the agent unit is not enabled"
# Before: an agent that came right after `server add` was refused until the
# relay's next poll of the state file, then backed off 15-30 s.
wait_until 5 "the agent is online at the relay" online "$id"
[ "$(systemctl show -P User vstats-agent)" != root ] || fail "agent runs as root"

step "kill -9 of the agent: systemd restarts it, and it is back online"
old_pid=$(main_pid vstats-agent)
kill -9 "$old_pid"
restarted() {
    pid=$(main_pid vstats-agent)
    [ "$pid" != 0 ] && [ "$pid" != "$old_pid" ]
}
# RestartSec=5.
wait_until 15 "systemd restarts the agent" restarted
[ "$(restarts vstats-agent)" = 1 ] || fail "NRestarts is $(restarts vstats-agent), not 1"
wait_until 15 "the restarted agent is online" online "$id"

step "systemctl reload vstats-relay"
relay_pid=$(main_pid vstats-relay)
systemctl reload vstats-relay || fail "systemctl reload vstats-relay"
wait_until 5 "the relay logs the reload" \
    sh -c 'journalctl -q --no-pager -u vstats-relay | grep -q "SIGHUP: reloading"'
[ "$(main_pid vstats-relay)" = "$relay_pid" ] || fail "reload restarted the relay"
systemctl is-active -q vstats-relay || fail "the relay stopped after a reload"
wait_until 5 "the agent is still online after the reload" online "$id"

step "token rotation: the agent is closed and keeps retrying slowly"
agent_pid=$(main_pid vstats-agent)
relay_cli server rotate-token "$id" >/dev/null || fail "rotate-token"
wait_until 10 "the agent is offline" offline "$id"
wait_until 10 "the agent logs the rejection" \
    sh -c 'journalctl -q --no-pager -u vstats-agent | grep -q "token rejected"'
# The agent keeps running and retries by itself (15-30 s apart), without
# systemd restarting it.
sleep 3
[ "$(main_pid vstats-agent)" = "$agent_pid" ] || fail "the agent process was replaced"
systemctl is-active -q vstats-agent || fail "the agent unit stopped"
delay=$(journalctl -q --no-pager -u vstats-agent |
    sed -n 's/.*reconnecting in \([0-9]*\)\..* s$/\1/p' | tail -n 1)
[ "${delay:-0}" -ge 15 ] || fail "after the rejection the agent retries in ${delay:-?} s, not 15-30"

step "systemd-analyze security: both units at 2.0 or lower"
for unit in vstats-relay vstats-agent; do
    exposure=$(systemd-analyze security --no-pager "$unit" |
        sed -n 's/^→ Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    [ -n "$exposure" ] || fail "no exposure level for $unit"
    printf '   %s: %s\n' "$unit" "$exposure"
    awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "$unit is exposed at $exposure"
done
# Not asserted: MemoryMax and TasksMax are accepted here but not enforced
# (nspawn on a cgroup v1 host leaves the controllers read-only), and the
# host may clamp LimitNOFILE.

step "install.sh --uninstall leaves nothing behind"
curl -fsS "$RELAY/install.sh" | sh -s -- --uninstall || fail "install.sh --uninstall"
systemctl is-active -q vstats-agent && fail "the agent still runs"
[ -z "$(systemctl list-unit-files --no-legend 'vstats-agent*')" ] ||
    fail "systemd still knows the agent's unit"
after_uninstall=$(file_list)
left=$(printf '%s\n' "$before_install" "$after_uninstall" | sort | uniq -u)
[ -z "$left" ] || fail "left behind or removed: $left"

step "all passed"
