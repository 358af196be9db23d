#!/bin/sh
# Builds the release binaries, static and stripped, into dist/ as
# vstats-<bin>-linux-<arch>, with SHA256SUMS. See cross/README.md.
#
#   scripts/build-release.sh                 # every target in cross/targets
#   scripts/build-release.sh x86_64 armv7    # some, by release name
set -eu
cd "$(dirname "$0")/.."
PATH="$PWD/.tools/bin:$PATH"

bins="vstats-agent vstats-relay"
wanted=" ${*:-x86_64 aarch64 armv7} "
mkdir -p dist

grep -v '^#' cross/targets | while read -r triple name _runner; do
    case "$wanted" in *" $name "*) ;; *) continue ;; esac
    # Size: a std without panic formatting or unwinding, C without unwind tables.
    flags='["-Zunstable-options", "-Cpanic=immediate-abort", "-Cforce-unwind-tables=no"'
    if [ "$triple" = armv7-unknown-linux-musleabihf ]; then
        flags="$flags, \"-Clink-self-contained=no\""
    fi
    bin_flags=""
    for bin in $bins; do bin_flags="$bin_flags --bin $bin"; done
    # $bin_flags is split on purpose: one word per flag.
    # shellcheck disable=SC2086
    env "CFLAGS_$(echo "$triple" | tr - _)=-fno-asynchronous-unwind-tables -fno-unwind-tables" \
        RUSTC_BOOTSTRAP=1 cargo zigbuild --quiet --release --locked --target "$triple" \
        $bin_flags -Z build-std=std,panic_abort \
        --config "target.$triple.rustflags = $flags]"
    for bin in $bins; do
        cp "target/$triple/release/$bin" "dist/$bin-linux-$name"
    done
done

(cd dist && sha256sum vstats-*-linux-* > SHA256SUMS)
ls -l dist
