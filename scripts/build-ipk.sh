#!/bin/sh
# Builds OpenWrt packages (.ipk) of vstats-agent from the release binaries in
# dist/: one for each OpenWrt package architecture a binary serves, e.g.
# dist/vstats-agent_0.1.0_aarch64_cortex-a53.ipk and ..._aarch64_generic.ipk
# from vstats-agent-linux-aarch64, and lists them in the output directory's
# SHA256SUMS. Run scripts/build-release.sh first.
#
#   scripts/build-ipk.sh [--dist DIR] [--out DIR] [ARCH...]
#
# ARCH is a release name (x86_64, aarch64, armv7, armv7sf, armv6, mipsel,
# mips); default: every dist/vstats-agent-linux-ARCH present. --out defaults
# to the dist directory.
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

# The OpenWrt package architectures (ARCH_PACKAGES, DISTRIB_ARCH on the
# router) each release binary serves: one package per name, the same static
# binary in each, since opkg and apk install only a package whose
# architecture names the router's exactly. cross/README.md explains the
# mapping and what is left out.
openwrt_arches() {
    case $1 in
    x86_64) echo x86_64 ;;
    aarch64) echo aarch64_cortex-a53 aarch64_cortex-a72 aarch64_cortex-a76 aarch64_generic ;;
    # ARMv7 with a VFP unit (VFPv3-D16 or better): hard float.
    armv7) echo arm_cortex-a5_vfpv4 arm_cortex-a7_neon-vfpv4 arm_cortex-a7_vfpv4 \
        arm_cortex-a8_vfpv3 arm_cortex-a9_neon arm_cortex-a9_vfpv3-d16 \
        arm_cortex-a15_neon-vfpv4 arm_cortex-a53_neon-vfpv4 ;;
    # OpenWrt's ARMv7 names without an FPU suffix are soft-float targets:
    # Broadcom Northstar's Cortex-A9 has no FPU at all.
    armv7sf) echo arm_cortex-a7 arm_cortex-a9 ;;
    armv6) echo arm_arm1176jzf-s_vfp ;;
    # MIPS32 release 2, soft float; 24kf's FPU is simply not used.
    mipsel) echo mipsel_24kc mipsel_24kc_24kf mipsel_74kc ;;
    mips) echo mips_24kc mips_4kec ;;
    *) die "unknown architecture $1 (known: x86_64, aarch64, armv7, armv7sf, armv6, mipsel, mips)" ;;
    esac
}

repo=$PWD
# shellcheck source=scripts/release-lib.sh
. scripts/release-lib.sh

# pack DIR ARCHIVE: DIR's contents as ./-prefixed members of a reproducible tar.gz.
pack() {
    tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime="@$epoch" -C "$1" -cf - . | gzip -n >"$2"
}

# check_sum FILE: FILE's line in SHA256SUMS must match, so a package is only
# ever made from the binary the release published.
check_sum() {
    [ -f "$dist/SHA256SUMS" ] || die "$dist/SHA256SUMS is missing"
    line=$(sum_line "$1" "$dist/SHA256SUMS")
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

# build_one RELEASE_ARCH OPENWRT_ARCH: prints the package's file name.
build_one() {
    work=$tmp/$2
    stage_data "$work/data" "$1"
    size=$(find "$work/data" -type f -exec cat {} + | wc -c | tr -d ' ')
    stage_control "$work/control" "$size" "$2"
    mkdir -p "$work/ipk"
    printf '2.0\n' >"$work/ipk/debian-binary"
    chmod 0644 "$work/ipk/debian-binary"
    pack "$work/data" "$work/ipk/data.tar.gz"
    pack "$work/control" "$work/ipk/control.tar.gz"
    ipk=vstats-agent_${version}_$2.ipk
    # Member order as ipkg-build writes it.
    (cd "$work/ipk" && tar --format=gnu --owner=0 --group=0 --numeric-owner \
        --mtime="@$epoch" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) |
        gzip -n >"$out/$ipk.tmp"
    mv "$out/$ipk.tmp" "$out/$ipk"
    echo "$ipk"
}

# list_sums FILE...: SHA256SUMS lines for these files in $out, replacing
# any earlier lines for them and keeping every other line.
list_sums() {
    (
        cd "$out"
        touch SHA256SUMS
        sha256sum "$@" >"$tmp/new-sums"
        printf '%s\n' "$@" >"$tmp/built"
        awk 'FNR == NR { built[$0] = 1; next } !($2 in built) && !(substr($2, 2) in built)' \
            "$tmp/built" SHA256SUMS >"$tmp/sums"
        cat "$tmp/new-sums" >>"$tmp/sums"
        cat "$tmp/sums" >SHA256SUMS.tmp
        mv SHA256SUMS.tmp SHA256SUMS
    )
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
version=$(cargo_version "$repo")
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
# Every binary is checked before any package is made.
for arch in "$@"; do
    openwrt_arches "$arch" >/dev/null
    check_sum "vstats-agent-linux-$arch"
done
built=
for arch in "$@"; do
    for owrt in $(openwrt_arches "$arch"); do
        ipk=$(build_one "$arch" "$owrt")
        echo "$out/$ipk"
        built="$built $ipk"
    done
done
# $built is a list of file names without spaces: split on purpose.
# shellcheck disable=SC2086
list_sums $built
