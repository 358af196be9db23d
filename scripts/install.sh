#!/bin/sh
# vstats-agent installer: downloads the static agent for this machine,
# checks it against the release's SHA256SUMS, installs it with its settings
# and a service (systemd, or procd on OpenWrt) and starts it.
#
#   curl -fsSL BASE_URL/install.sh | sh -s -- --server wss://relay:3001 --token T
#
# POSIX sh: runs under busybox ash, dash and bash. It is self-contained (the
# systemd unit and the procd init script are embedded below, identical to
# packaging/), so it works when piped.
set -eu

# Placeholder: where releases are published (vstats-agent-linux-<arch> and
# SHA256SUMS). Override with --base-url.
DEFAULT_BASE_URL=https://github.com/vstats/vstats/releases/latest/download

usage() {
    cat <<'EOF'
Usage: install.sh --server URL --token TOKEN [options]
       install.sh --uninstall [--root DIR]

Installs vstats-agent, writes its settings, installs and starts the service
(systemd, or procd on OpenWrt). Run it again to upgrade in place; without
--server and --token it keeps the settings it finds. The build follows
`uname -m`: x86_64, aarch64, armv7 (armv7sf on a CPU without an FPU), armv6
or MIPS32 release 2 (mips or mipsel by byte order); /etc/openwrt_release,
/proc/cpuinfo and /bin/sh, inside the --root DIR, tell FPU and byte order.

  --server URL        relay: wss://host:3001 or a full ws:// or wss:// URL
  --token TOKEN       the agent token the relay issued
  --token-file FILE   read the token from FILE instead
  --interval SECONDS  seconds between samples (agent default 1)
  --interfaces A,B    interfaces counted in the network totals
  --ca-file PEM       also trust this CA; copied to /etc/vstats/ca.pem
  --base-url URL      where to download from (default: the latest release)
  --root DIR          install under DIR, a staging root (default /);
                      service commands still run unless --no-start
  --no-start          install only: run no service commands
  --uninstall         stop the service and remove everything installed
  -h, --help          this help

Environment, for testing: VSTATS_INSTALL_ARCH replaces `uname -m`;
VSTATS_INSTALL_INIT (systemd, procd or none) replaces the detection of the
service manager.
EOF
}

die() {
    printf 'vstats-install: %s\n' "$*" >&2
    exit 1
}

say() {
    printf 'vstats-install: %s\n' "$*"
}

# ---- options ----------------------------------------------------------------

server=
token=
token_file=
interval=
interfaces=
ca_file=
base_url=$DEFAULT_BASE_URL
root=/
uninstall=0
start=1

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"
}

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
        --server) need_value "$1" $#; server=$2; shift ;;
        --token) need_value "$1" $#; token=$2; shift ;;
        --token-file) need_value "$1" $#; token_file=$2; shift ;;
        --interval) need_value "$1" $#; interval=$2; shift ;;
        --interfaces) need_value "$1" $#; interfaces=$2; shift ;;
        --ca-file) need_value "$1" $#; ca_file=$2; shift ;;
        --base-url) need_value "$1" $#; base_url=$2; shift ;;
        --root) need_value "$1" $#; root=$2; shift ;;
        --no-start) start=0 ;;
        --uninstall) uninstall=1 ;;
        -h | --help) usage; exit 0 ;;
        --*=*)
            # --opt=value: split it and look again.
            option=${1%%=*} value=${1#*=}
            shift
            set -- "$option" "$value" "$@"
            continue
            ;;
        -*) die "unknown option $1 (see --help)" ;;
        # Not echoed: a stray word may be a token.
        *) die "unexpected argument (options start with --; see --help)" ;;
        esac
        shift
    done
}

# Settings are written single-quoted (agent.env, UCI): a quote or a line
# break in a value would end it early.
check_value() {
    case $2 in
    *"'"* | *'
'*) die "$1 must not contain a quote or a line break" ;;
    esac
}

read_token_file() {
    [ -n "$token_file" ] || return 0
    [ -z "$token" ] || die "give --token or --token-file, not both"
    [ -r "$token_file" ] || die "cannot read --token-file $token_file"
    token=$(cat "$token_file")
    [ -n "$token" ] || die "--token-file $token_file is empty"
}

check_values() {
    case $server in
    '' | ws://* | wss://*) ;;
    *) die "--server must start with ws:// or wss://" ;;
    esac
    case $interval in
    *[!0-9.]* | *.*.* | .) die "--interval must be a number of seconds" ;;
    esac
    if [ -n "$ca_file" ] && [ ! -r "$ca_file" ]; then
        die "cannot read --ca-file $ca_file"
    fi
    check_value --server "$server"
    check_value --token "$token"
    check_value --interfaces "$interfaces"
}

# Without --server and --token, a re-run (an upgrade) keeps the settings.
check_required() {
    keep_settings=0
    if [ -z "$server$token" ]; then
        [ -f "$R$settings" ] || die "--server and --token are required (see --help)"
        [ -z "$interval$interfaces$ca_file" ] ||
            die "give --server and --token too when changing settings"
        keep_settings=1
    elif [ -z "$server" ]; then
        die "--server is required with --token"
    elif [ -z "$token" ]; then
        die "--token is required with --server"
    fi
}

check_settings() {
    read_token_file
    check_values
    check_required
}

# ---- where and what ---------------------------------------------------------

# R is the root prefix of every installed path: empty for the live system.
set_root() {
    case $root in
    /) R= ;;
    *)
        [ -d "$root" ] || die "--root $root is not a directory"
        R=$(cd "$root" && pwd)
        [ "$R" != / ] || R=
        ;;
    esac
    if [ -z "$R" ] && [ "$(id -u)" != 0 ]; then
        die "must run as root (e.g. curl -fsSL URL/install.sh | sudo sh -s -- ...)"
    fi
}

# What detect_arch names when it refuses a machine.
supported="x86_64 (amd64), aarch64 (arm64), armv7 (armv7l, armv8l; hard or soft float), armv6 (hard float: Raspberry Pi Zero/1) and 32-bit MIPS release 2 (mips, mipsel)"

# unsupported [WHY]: refuse $machine, saying what there is a build for.
unsupported() {
    die "unsupported architecture $machine: ${1:+$1; }vstats-agent is built for $supported"
}

# DISTRIB_ARCH of an OpenWrt root (mipsel_24kc, arm_cortex-a9 ...), or nothing.
openwrt_arch() {
    [ -r "$R/etc/openwrt_release" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
        DISTRIB_ARCH=*)
            line=${line#DISTRIB_ARCH=}
            line=${line#[\"\']}
            echo "${line%[\"\']}"
            return 0
            ;;
        esac
    done <"$R/etc/openwrt_release"
}

# The value of the first "NAME : value" line of the root's /proc/cpuinfo
# (Features on ARM, isa on MIPS), or nothing.
cpuinfo() {
    [ -r "$R/proc/cpuinfo" ] || return 0
    awk -v name="$1" '
        { key = $0; sub(/[ \t]*:.*/, "", key) }
        key == name && /:/ { sub(/^[^:]*:[ \t]*/, ""); print; exit }
    ' "$R/proc/cpuinfo"
}

# in_root PATH: the file PATH names inside the root, its symlinks followed
# there too (an absolute target such as /bin/sh -> /bin/busybox means
# $R/bin/busybox, not the running system's).
in_root() {
    rest=${1#/} done_='' links=0
    while [ -n "$rest" ]; do
        part=${rest%%/*}
        case $rest in
        */*) rest=${rest#*/} ;;
        *) rest= ;;
        esac
        case $part in
        '' | .) continue ;;
        ..) done_=${done_%/*}; continue ;;
        esac
        if [ -L "$R$done_/$part" ] && [ "$links" -lt 40 ]; then
            links=$((links + 1))
            target=$(ls -ld "$R$done_/$part")
            target=${target#*"$R$done_/$part -> "}
            case $target in
            /*) done_= ;;
            esac
            rest=${target#/}${rest:+/$rest}
        else
            done_=$done_/$part
        fi
    done
    echo "$R$done_"
}

# The byte order of an ELF file from its identification bytes: EI_CLASS
# (byte 4: 1 32-bit, 2 64-bit) and EI_DATA (byte 5: 1 little, 2 big endian).
# Prints little, big or 64-bit; nothing if it is no ELF file. dd and tr, not
# od: OpenWrt's busybox has no od by default.
elf_byte_order() {
    ident=$(dd if="$1" bs=6 count=1 2>/dev/null | tr '\000\001\002\177' '012x') || true
    case $ident in
    xELF11) echo little ;;
    xELF12) echo big ;;
    xELF2?) echo 64-bit ;;
    esac
}

# mips or mipsel, for a `uname -m` of mips (either byte order): the byte order
# from OpenWrt's DISTRIB_ARCH, else from the ELF header of /bin/sh. The builds
# are MIPS32 release 2; release 1 and 64-bit userlands are refused.
detect_mips() {
    openwrt=$(openwrt_arch)
    case $openwrt in
    mips_mips32 | mipsel_mips32 | mips_mips32_* | mipsel_mips32_*)
        unsupported "MIPS32 release 1 (OpenWrt mips_mips32/mipsel_mips32; DISTRIB_ARCH is $openwrt) is not supported"
        ;;
    mips64*) unsupported "a 64-bit MIPS userland (OpenWrt $openwrt) is not supported" ;;
    esac
    # Kernels 4.x and later list the ISA levels the CPU implements.
    isa=$(cpuinfo isa)
    if [ -n "$isa" ]; then
        case " $isa " in
        *[[:space:]]mips32r2[[:space:]]*) ;;
        *) unsupported "this CPU does not run MIPS32 release 2 code (isa: $isa); MIPS32 release 1 (OpenWrt mips_mips32/mipsel_mips32) and release 6 are not supported" ;;
        esac
    fi
    case $openwrt in
    mipsel_*) echo mipsel; return 0 ;;
    mips_*) echo mips; return 0 ;;
    esac
    sh=$(in_root /bin/sh)
    case $(elf_byte_order "$sh") in
    little) echo mipsel ;;
    big) echo mips ;;
    64-bit) unsupported "$sh is a 64-bit program: 64-bit MIPS userlands are not supported" ;;
    *) die "cannot tell whether this mips machine is big or little endian: no DISTRIB_ARCH in $R/etc/openwrt_release, and $sh is not a readable ELF file" ;;
    esac
}

# Whether the CPU has a floating point unit, from the Features line of
# /proc/cpuinfo (vfp..., neon; or fp, asimd as an arm64 kernel lists them to a
# 64-bit reader): yes, no, or nothing without such a line.
arm_fpu() {
    features=$(cpuinfo Features)
    [ -n "$features" ] || return 0
    case " $features " in
    *[[:space:]]vfp* | *[[:space:]]neon* | *[[:space:]]fp[[:space:]]* | *[[:space:]]asimd*) echo yes ;;
    *) echo no ;;
    esac
}

# Our release names for `uname -m`. On arm and mips what the CPU can run is
# not all in the name: OpenWrt's DISTRIB_ARCH (arm_cortex-a9 has no FPU,
# mipsel_24kc is little endian) and /proc/cpuinfo tell the rest.
detect_arch() {
    machine=${VSTATS_INSTALL_ARCH:-$(uname -m)}
    case $machine in
    x86_64 | amd64) echo x86_64 ;;
    aarch64 | arm64) echo aarch64 ;;
    armv7* | armv8l)
        # armv7sf runs on any ARMv7; armv7 needs a VFP unit.
        openwrt=$(openwrt_arch)
        case $openwrt in
        arm_*vfp* | arm_*neon*) echo armv7 ;;
        arm_*) echo armv7sf ;;
        *)
            if [ "$(arm_fpu)" = no ]; then
                echo armv7sf
            else
                echo armv7
            fi
            ;;
        esac
        ;;
    armv6l)
        openwrt=$(openwrt_arch)
        case $openwrt in
        '' | *vfp*) ;;
        *) unsupported "ARMv6 without an FPU (OpenWrt $openwrt) is not supported, the armv6 build needs VFP (arm1176jzf-s)" ;;
        esac
        if [ -z "$openwrt" ] && [ "$(arm_fpu)" = no ]; then
            unsupported "ARMv6 without an FPU (no vfp in /proc/cpuinfo) is not supported, the armv6 build needs VFP (arm1176jzf-s)"
        fi
        echo armv6
        ;;
    mips) detect_mips ;;
    *) unsupported ;;
    esac
}

# procd when the root is OpenWrt, systemd when systemd runs the root, else none.
detect_init() {
    if [ -n "${VSTATS_INSTALL_INIT:-}" ]; then
        case $VSTATS_INSTALL_INIT in
        systemd | procd | none) echo "$VSTATS_INSTALL_INIT" ;;
        *) die "VSTATS_INSTALL_INIT must be systemd, procd or none" ;;
        esac
    elif [ -f "$R/etc/openwrt_release" ]; then
        echo procd
    elif command -v systemctl >/dev/null 2>&1 && [ -d "$R/run/systemd/system" ]; then
        echo systemd
    else
        echo none
    fi
}

set_paths() {
    init=$(detect_init)
    case $init in
    procd)
        bin=/usr/bin/vstats-agent
        settings=/etc/config/vstats
        service=/etc/init.d/vstats-agent
        ;;
    systemd)
        bin=/usr/local/bin/vstats-agent
        settings=/etc/vstats/agent.env
        service=/etc/systemd/system/vstats-agent.service
        ;;
    none)
        bin=/usr/local/bin/vstats-agent
        settings=/etc/vstats/agent.env
        service=
        ;;
    esac
    ca_path=/etc/vstats/ca.pem
}

# An opkg-installed package owns these paths: let opkg manage it.
refuse_opkg_package() {
    if [ -f "$R/usr/lib/opkg/info/vstats-agent.control" ]; then
        die "the vstats-agent package is installed: use opkg upgrade/remove vstats-agent"
    fi
}

# ---- download and verify ----------------------------------------------------

tmp=
partial=
cleanup() {
    [ -z "$partial" ] || rm -f "$partial"
    [ -z "$tmp" ] || rm -rf "$tmp"
}

# fetch URL FILE
fetch() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    elif command -v uclient-fetch >/dev/null 2>&1; then
        uclient-fetch -q -O "$2" "$1"
    else
        die "need curl, wget or uclient-fetch to download"
    fi || die "download failed: $1"
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    elif command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha256 "$1" | sed 's/.*= *//'
    else
        die "need sha256sum or openssl to check the download"
    fi
}

# Sets downloaded to a verified copy of the agent for $arch in $tmp.
download_agent() {
    name=vstats-agent-linux-$arch
    base=${base_url%/}
    fetch "$base/SHA256SUMS" "$tmp/SHA256SUMS"
    expected=$(awk -v file="$name" '$2 == file || $2 == "*" file { print $1; exit }' "$tmp/SHA256SUMS")
    [ -n "$expected" ] || die "$name is not listed in $base/SHA256SUMS: refusing to install"
    say "downloading $base/$name"
    fetch "$base/$name" "$tmp/$name"
    actual=$(sha256_of "$tmp/$name")
    case $actual in
    *[!0-9a-f]* | '') die "could not compute the SHA-256 of $name" ;;
    esac
    expected=$(printf '%s' "$expected" | tr 'A-F' 'a-f')
    if [ "$actual" != "$expected" ]; then
        die "checksum mismatch for $name (expected $expected, got $actual): refusing to install"
    fi
    downloaded=$tmp/$name
}

# ---- install ----------------------------------------------------------------

# put SOURCE DEST MODE: replace DEST atomically (a temp file beside it, then
# rename), so a running agent keeps its old inode and a reader never sees half
# a file.
put() {
    mkdir -p "$R${2%/*}"
    partial=$R${2%/*}/.${2##*/}.new.$$
    cp "$1" "$partial"
    chmod "$3" "$partial"
    mv -f "$partial" "$R$2"
    partial=
}

agent_env() {
    echo "# vstats-agent settings (see vstats-agent --help), written by install.sh."
    echo "# Read by systemd's EnvironmentFile=; holds the token: keep it mode 0600."
    # printf, not echo: dash's echo would expand backslashes in a value.
    printf "VSTATS_SERVER='%s'\n" "$server"
    printf "VSTATS_TOKEN='%s'\n" "$token"
    [ -z "$interval" ] || printf "VSTATS_INTERVAL='%s'\n" "$interval"
    [ -z "$interfaces" ] || printf "VSTATS_NET_INTERFACES='%s'\n" "$interfaces"
    [ -z "$ca_file" ] || printf "VSTATS_CA_FILE='%s'\n" "$ca_path"
}

uci_config() {
    echo "# vstats-agent settings, read by /etc/init.d/vstats-agent; written by install.sh."
    echo "config agent 'agent'"
    printf "\toption enabled '1'\n"
    printf "\toption server '%s'\n" "$server"
    printf "\toption token '%s'\n" "$token"
    [ -z "$interval" ] || printf "\toption interval '%s'\n" "$interval"
    [ -z "$interfaces" ] || printf "\toption interfaces '%s'\n" "$interfaces"
    [ -z "$ca_file" ] || printf "\toption ca_file '%s'\n" "$ca_path"
}

# On a live OpenWrt, through uci: options this run does not set (interval,
# log_level ...) keep their values, and uci's own bookkeeping stays right.
uci_set() {
    touch /etc/config/vstats
    chmod 0600 /etc/config/vstats
    {
        echo "set vstats.agent=agent"
        echo "set vstats.agent.enabled='1'"
        printf "set vstats.agent.server='%s'\n" "$server"
        printf "set vstats.agent.token='%s'\n" "$token"
        [ -z "$interval" ] || printf "set vstats.agent.interval='%s'\n" "$interval"
        [ -z "$interfaces" ] || printf "set vstats.agent.interfaces='%s'\n" "$interfaces"
        [ -z "$ca_file" ] || printf "set vstats.agent.ca_file='%s'\n" "$ca_path"
        echo "commit vstats"
    } | uci -q batch >/dev/null || die "uci could not write /etc/config/vstats"
}

write_settings() {
    if [ "$keep_settings" = 1 ]; then
        say "keeping the settings in $R$settings"
        return 0
    fi
    [ -z "$ca_file" ] || put "$ca_file" "$ca_path" 0644
    if [ "$init" = procd ] && [ -z "$R" ] && command -v uci >/dev/null 2>&1; then
        uci_set
    elif [ "$init" = procd ]; then
        uci_config >"$tmp/settings"
        put "$tmp/settings" "$settings" 0600
    else
        agent_env >"$tmp/settings"
        put "$tmp/settings" "$settings" 0600
    fi
    say "settings written to $R$settings"
}

install_files() {
    upgrade=0
    [ ! -f "$R$bin" ] || upgrade=1
    put "$downloaded" "$bin" 0755
    say "installed $R$bin"
    write_settings
    case $init in
    systemd)
        systemd_unit >"$tmp/service"
        put "$tmp/service" "$service" 0644
        ;;
    procd)
        procd_init >"$tmp/service"
        put "$tmp/service" "$service" 0755
        ;;
    none) return 0 ;;
    esac
    say "installed $R$service"
}

# ---- services ---------------------------------------------------------------

# Runs an action of the procd init script. In a staging root it runs the
# root's own rc.common the way OpenWrt's image builder does (IPKG_INSTROOT set),
# which is also how tests watch the calls.
init_script() {
    if [ -z "$R" ]; then
        "$service" "$1"
    elif [ -f "$R/etc/rc.common" ]; then
        IPKG_INSTROOT=$R sh "$R/etc/rc.common" "$R$service" "$1"
    else
        say "no $R/etc/rc.common: skipped $service $1"
    fi
}

start_service() {
    [ "$start" = 1 ] || return 0
    case $init in
    systemd)
        systemctl daemon-reload
        systemctl enable --now vstats-agent
        [ "$upgrade" = 0 ] || systemctl restart vstats-agent
        say "started: journalctl -u vstats-agent -f shows its log"
        ;;
    procd)
        init_script enable
        init_script restart
        say "started: logread -e vstats-agent shows its log"
        ;;
    none)
        say "no systemd or procd found: start it with"
        say "  sh -c 'set -a; . $settings; exec $bin'"
        ;;
    esac
}

stop_service() {
    [ "$start" = 1 ] || return 0
    case $init in
    systemd) systemctl disable --now vstats-agent || true ;;
    procd)
        init_script stop || true
        init_script disable || true
        ;;
    esac
}

# ---- uninstall --------------------------------------------------------------

remove_all() {
    if [ -n "$service" ] && [ -f "$R$service" ]; then
        stop_service
    fi
    for file in "$bin" "$settings" "$service" "$ca_path"; do
        if [ -n "$file" ] && [ -f "$R$file" ]; then
            rm -f "$R$file"
            say "removed $R$file"
        fi
    done
    if [ "$init" = systemd ] && [ "$start" = 1 ]; then
        systemctl daemon-reload
    fi
    # Only if empty: anything else there is not ours.
    rmdir "$R/etc/vstats" 2>/dev/null || true
}

# ---- embedded service files (identical to packaging/) -----------------------

systemd_unit() {
    cat <<'VSTATS_UNIT_EOF'
# vstats-agent: streams this host's metrics to a vstats relay.
# Settings: /etc/vstats/agent.env (mode 0600: it holds the token), written by
# scripts/install.sh; every variable is listed by `vstats-agent --help`.
# scripts/install.sh embeds a copy of this file: keep the two identical.

[Unit]
Description=vstats agent (streams this host's metrics to a vstats relay)
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
# Read by systemd itself (as root) before dropping privileges, so the file
# stays root-only while the agent runs unprivileged.
EnvironmentFile=/etc/vstats/agent.env
ExecStart=/usr/local/bin/vstats-agent
# The agent retries a lost relay itself; this catches crashes and bad settings
# (exit 2) without spinning faster than every 5 s.
Restart=always
RestartSec=5

# An unprivileged user allocated at start: the agent owns no files and needs
# no capabilities (everything it reads in /proc and /sys is world-readable),
# so there is no account to create or clean up. DynamicUser also implies
# ProtectSystem=strict, ProtectHome=read-only, PrivateTmp, RemoveIPC.
DynamicUser=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
ProtectSystem=strict
# Not `yes`: that mounts an empty directory over /home, so statvfs would report
# that tmpfs instead of a separate /home disk. Read-only keeps disk usage true.
ProtectHome=read-only
# Private /tmp is a directory on the same filesystem: disk figures unchanged.
PrivateTmp=yes
# Disks are recognised from /proc/mounts text, never by opening /dev nodes.
PrivateDevices=yes
# These make /proc/sys, /sys and cgroupfs read-only; the agent only reads them.
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
# The hostname is read once at start; a new UTS namespace copies it then.
ProtectHostname=yes
PrivateMounts=yes
# Deliberately absent: ProtectProc=invisible and ProcSubset=pid would hide the
# processes it counts and /proc/stat, meminfo, net/dev ...; PrivateNetwork
# would hide the host's interfaces.
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
# A call outside the list fails with EPERM rather than killing the agent.
SystemCallErrorNumber=EPERM
UMask=0077
# It uses about 2 MB and keeps no growing state; a leak hits this, not the host.
MemoryMax=32M
# One thread, and a short-lived second one while the relay's name resolves.
TasksMax=8

[Install]
WantedBy=multi-user.target
VSTATS_UNIT_EOF
}

procd_init() {
    cat <<'VSTATS_INIT_EOF'
#!/bin/sh /etc/rc.common
# vstats-agent: streams this router's metrics to a vstats relay.
# Settings: /etc/config/vstats, section 'agent' (enabled, server, token,
# token_in_query, interval, interfaces, ca_file, log_level). `uci commit
# vstats` followed by `reload_config` (or `/etc/init.d/vstats-agent reload`)
# applies a change.
# scripts/install.sh embeds a copy of this file: keep the two identical.

# Read by /etc/rc.common, which sources this file.
USE_PROCD=1
START=99
STOP=10

PROG=/usr/bin/vstats-agent

start_service() {
	local enabled server token token_in_query interval interfaces ca_file log_level

	config_load vstats
	config_get_bool enabled agent enabled 0
	config_get server agent server
	config_get token agent token
	config_get_bool token_in_query agent token_in_query 0
	config_get interval agent interval
	config_get interfaces agent interfaces
	config_get ca_file agent ca_file
	config_get log_level agent log_level

	if [ "$enabled" != 1 ]; then
		logger -t vstats-agent "not started: disabled (set option enabled '1' in /etc/config/vstats)"
		return 0
	fi
	if [ -z "$server" ] || [ -z "$token" ]; then
		logger -t vstats-agent -p daemon.err "not started: option server and option token must be set in /etc/config/vstats"
		return 0
	fi

	# Settings go in the environment, not on the command line, so the token
	# does not show in ps.
	set -- VSTATS_SERVER="$server" VSTATS_TOKEN="$token"
	[ "$token_in_query" != 1 ] || set -- "$@" VSTATS_TOKEN_IN_QUERY=1
	[ -z "$interval" ] || set -- "$@" VSTATS_INTERVAL="$interval"
	[ -z "$interfaces" ] || set -- "$@" VSTATS_NET_INTERFACES="$interfaces"
	[ -z "$ca_file" ] || set -- "$@" VSTATS_CA_FILE="$ca_file"
	[ -z "$log_level" ] || set -- "$@" VSTATS_LOG_LEVEL="$log_level"

	procd_open_instance
	procd_set_param command "$PROG"
	procd_set_param env "$@"
	# procd's defaults: respawn after 5 s, give up after 5 quick deaths in an
	# hour (a bad setting exits with code 2; a lost relay never exits).
	procd_set_param respawn
	# The agent logs to stderr; procd forwards both streams to logd (logread).
	procd_set_param stdout 1
	procd_set_param stderr 1
	# A changed config file restarts the instance on reload.
	procd_set_param file /etc/config/vstats
	procd_close_instance
}

service_triggers() {
	procd_add_reload_trigger vstats
}
VSTATS_INIT_EOF
}

# ---- main -------------------------------------------------------------------

main() {
    parse_args "$@"
    set_root
    set_paths
    refuse_opkg_package
    if [ "$uninstall" = 1 ]; then
        remove_all
        say "uninstalled"
        return 0
    fi
    check_settings
    arch=$(detect_arch)
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/vstats-install.XXXXXX")
    download_agent
    install_files
    start_service
    say "done"
}

main "$@"
