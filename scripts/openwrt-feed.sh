#!/bin/sh
# Writes the OpenWrt feed package for a release: a copy of packaging/openwrt
# (Makefile and files/) as OUT/vstats-agent, with PKG_VERSION from Cargo.toml
# and each binary's hash from the release's SHA256SUMS filled in. Put OUT in
# an SDK's feeds.conf (src-link vstats OUT) or copy OUT/vstats-agent into a
# feed. Run scripts/build-release.sh first.
#
#   scripts/openwrt-feed.sh [--dist DIR] OUT
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/release-lib.sh
. "$repo/scripts/release-lib.sh"

die() {
    printf 'openwrt-feed: %s\n' "$*" >&2
    exit 1
}

dist=$repo/dist
while [ $# -gt 0 ]; do
    case $1 in
    --dist) [ $# -ge 2 ] || die "--dist needs a directory"; dist=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || die "give one output directory (see --help)"
out=$1/vstats-agent
sums=$dist/SHA256SUMS
[ -f "$sums" ] || die "$sums is missing (run scripts/build-release.sh)"

version=$(cargo_version "$repo")
# apk (OpenWrt 25.12+) takes digits and dots, a letter, _suffixes; no dash.
case $version in
'' | *[!0-9a-z._]* | [!0-9]*) die "version '$version' is not valid for OpenWrt's apk: make it digits and dots" ;;
esac

makefile=$repo/packaging/openwrt/Makefile
script=
# One word a line: the release names.
# shellcheck disable=SC2013
for arch in $(sed -n 's/^VSTATS_HASH_\([a-z0-9_]*\):=.*/\1/p' "$makefile"); do
    hash=$(sum_line "vstats-agent-linux-$arch" "$sums" | cut -d ' ' -f 1)
    [ -n "$hash" ] || die "vstats-agent-linux-$arch is not listed in $sums"
    script="$script s/^VSTATS_HASH_$arch:=.*/VSTATS_HASH_$arch:=$hash/;"
done

mkdir -p "$out/files"
sed -e "$script" -e "s/^PKG_VERSION:=.*/PKG_VERSION:=$version/" "$makefile" >"$out/Makefile"
cp "$repo/packaging/openwrt/files/vstats-agent.init" "$repo/packaging/openwrt/files/vstats.config" "$out/files/"
if grep -q '^VSTATS_HASH_[a-z0-9_]*:=0\{64\}$' "$out/Makefile"; then
    die "a hash was left unset in $out/Makefile"
fi
echo "$out"
