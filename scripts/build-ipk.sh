#!/bin/sh
# Builds an OpenWrt package (.ipk) of vstats-agent for each release binary in
# dist/, named for OpenWrt's architectures, e.g.
# dist/vstats-agent_0.1.0_aarch64_generic.ipk. Run scripts/build-release.sh
# first.
#
#   scripts/build-ipk.sh [--dist DIR] [--out DIR] [ARCH...]
#
# ARCH is a release name (x86_64, aarch64, armv7); default: every
# dist/vstats-agent-linux-ARCH present. --out defaults to the dist directory.
# Archives are reproducible: sorted, owner 0:0, mtimes SOURCE_DATE_EPOCH
# (default 0), gzip without name or timestamp.
#
# The format is what OpenWrt's ipkg-build writes: a tar.gz holding
# ./debian-binary, ./data.tar.gz and ./control.tar.gz. Only POSIX tools, tar
# and gzip are used; tar must be GNU tar, for the flags that make it
# reproducible (ipkg-build uses the same ones).
set -eu
cd "$(dirname "$0")/.."

die() {
    printf 'build-ipk: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"
}

# OpenWrt's name for each release architecture. armv7 is our hard-float
# musleabihf build, which OpenWrt's armv7 targets (cortex-a7/a9/a15) run.
openwrt_arch() {
    case $1 in
    x86_64) echo x86_64 ;;
    aarch64) echo aarch64_generic ;;
    armv7) echo arm_cortex-a7_neon-vfpv4 ;;
    *) die "unknown architecture $1 (known: x86_64, aarch64, armv7)" ;;
    esac
}

cargo_version() {
    awk -F '"' '/^\[/ { in_package = ($0 == "[package]") }
        in_package && /^version *=/ { print $2; exit }' Cargo.toml
}

# pack DIR ARCHIVE: DIR's contents as ./-prefixed members of a reproducible tar.gz.
pack() {
    tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime="@$epoch" -C "$1" -cf - . | gzip -n >"$2"
}

# check_sum FILE: FILE's line in SHA256SUMS must match, so a package is only
# ever made from the binary the release published.
check_sum() {
    [ -f "$dist/SHA256SUMS" ] || die "$dist/SHA256SUMS is missing"
    line=$(awk -v file="$1" '$2 == file || $2 == "*" file' "$dist/SHA256SUMS")
    [ -n "$line" ] || die "$1 has no line in $dist/SHA256SUMS"
    (cd "$dist" && printf '%s\n' "$line" | sha256sum -c - >/dev/null) ||
        die "$1 does not match $dist/SHA256SUMS"
}

control_file() {
    cat <<EOF
Package: vstats-agent
Version: $version
Architecture: $2
Maintainer: vstats developers
License: MIT
Section: utils
Installed-Size: $1
Description: Streams this router's metrics (CPU, memory, disks, network,
 temperatures) to a vstats relay over WebSocket. One static binary; configure
 it in /etc/config/vstats.
EOF
    # No Depends: the binary is static (musl linked in), so not even libc.
}

postinst_file() {
    cat <<'EOF'
#!/bin/sh
# On a running router only: when an image is being built, IPKG_INSTROOT names
# the staging root and nothing may be started. The init script starts nothing
# until /etc/config/vstats has enabled '1', a server and a token.
if [ -z "${IPKG_INSTROOT:-}" ]; then
	/etc/init.d/vstats-agent enable
	/etc/init.d/vstats-agent restart
fi
exit 0
EOF
}

prerm_file() {
    cat <<'EOF'
#!/bin/sh
if [ -z "${IPKG_INSTROOT:-}" ]; then
	/etc/init.d/vstats-agent stop
	/etc/init.d/vstats-agent disable
fi
exit 0
EOF
}

# stage_data DIR ARCH: the files the package installs.
stage_data() {
    mkdir -p "$1/usr/bin" "$1/etc/init.d" "$1/etc/config"
    cp "$dist/vstats-agent-linux-$2" "$1/usr/bin/vstats-agent"
    cp packaging/openwrt/files/vstats-agent.init "$1/etc/init.d/vstats-agent"
    cp packaging/openwrt/files/vstats.config "$1/etc/config/vstats"
    find "$1" -type d -exec chmod 0755 {} +
    chmod 0755 "$1/usr/bin/vstats-agent" "$1/etc/init.d/vstats-agent"
    # The config will hold the token.
    chmod 0600 "$1/etc/config/vstats"
}

# stage_control DIR INSTALLED_SIZE OPENWRT_ARCH
stage_control() {
    mkdir -p "$1"
    chmod 0755 "$1"
    control_file "$2" "$3" >"$1/control"
    echo /etc/config/vstats >"$1/conffiles"
    postinst_file >"$1/postinst"
    prerm_file >"$1/prerm"
    chmod 0644 "$1/control" "$1/conffiles"
    chmod 0755 "$1/postinst" "$1/prerm"
}

build_one() {
    check_sum "vstats-agent-linux-$1"
    owrt=$(openwrt_arch "$1")
    work=$tmp/$1
    stage_data "$work/data" "$1"
    size=$(find "$work/data" -type f -exec cat {} + | wc -c | tr -d ' ')
    stage_control "$work/control" "$size" "$owrt"
    mkdir -p "$work/ipk"
    printf '2.0\n' >"$work/ipk/debian-binary"
    chmod 0644 "$work/ipk/debian-binary"
    pack "$work/data" "$work/ipk/data.tar.gz"
    pack "$work/control" "$work/ipk/control.tar.gz"
    ipk=$out/vstats-agent_${version}_$owrt.ipk
    # Member order as ipkg-build writes it.
    (cd "$work/ipk" && tar --format=gnu --owner=0 --group=0 --numeric-owner \
        --mtime="@$epoch" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) |
        gzip -n >"$ipk.tmp"
    mv "$ipk.tmp" "$ipk"
    echo "$ipk"
}

dist=dist
out=
while [ $# -gt 0 ]; do
    case $1 in
    --dist) [ $# -ge 2 ] || die "--dist needs a directory"; dist=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
    esac
done
out=${out:-$dist}
epoch=${SOURCE_DATE_EPOCH:-0}
tar --version 2>/dev/null | grep -q 'GNU tar' ||
    die "needs GNU tar (--sort, --owner, --mtime make the packages reproducible)"
version=$(cargo_version)
[ -n "$version" ] || die "no version in Cargo.toml's [package]"

if [ $# -eq 0 ]; then
    for binary in "$dist"/vstats-agent-linux-*; do
        [ -f "$binary" ] || die "no $dist/vstats-agent-linux-* (run scripts/build-release.sh)"
        set -- "$@" "${binary##*/vstats-agent-linux-}"
    done
fi

mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for arch in "$@"; do
    build_one "$arch"
done
