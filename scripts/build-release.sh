#!/bin/sh
# Builds the release binaries, static and stripped, into dist/ as
# vstats-<bin>-linux-<arch>, the OpenWrt packages (scripts/build-ipk.sh), and
# SHA256SUMS of them all. See cross/README.md.
#
#   scripts/build-release.sh                 # every target in cross/targets
#   scripts/build-release.sh x86_64 armv7    # some, by release name
set -eu
cd "$(dirname "$0")/.."
PATH="$PWD/.tools/bin:$PATH"

bins="vstats-agent vstats-relay"
# rustup's llvm-tools (scripts/setup-dev.sh): one objcopy for every target.
objcopy="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-objcopy"
[ -x "$objcopy" ] || { echo "build-release: $objcopy is missing (rustup component add llvm-tools)" >&2; exit 1; }
all=$(grep -v '^#' cross/targets | awk '{ printf " %s", $2 }')
wanted=" ${*:-$all} "
for name in $wanted; do
    case " $all " in *" $name "*) ;; *) echo "build-release: unknown target $name (known:$all)" >&2; exit 2 ;; esac
done
mkdir -p dist

grep -v '^#' cross/targets | while read -r triple name _runner_and_cpu; do
    case "$wanted" in *" $name "*) ;; *) continue ;; esac
    # Size: a std without panic formatting or unwinding, C without unwind
    # tables. Cargo appends these to what .cargo/config.toml gives the target.
    flags='"-Zunstable-options", "-Cpanic=immediate-abort", "-Cforce-unwind-tables=no"'
    case $triple in
    # MIPS code is position-independent by default: every call and global
    # goes through the GOT. A static executable needs none of it; the agent
    # drops from 1.10 MB to 1.00 MB.
    mips*) flags="$flags, \"-Crelocation-model=static\"" ;;
    esac
    # C (SQLite, most of it: the relay's history database) as Thumb-2 on
    # ARMv7 (cross/cc-thumb.sh): 240 KB less. Rust and C call each other
    # across modes as the ABI says. ARMv6 has Thumb-1 only, and stays ARM.
    cc="" cc_target=""
    case $triple in
    armv7-unknown-linux-musleabihf) cc="$PWD/cross/cc-thumb.sh" cc_target=arm-linux-musleabihf ;;
    armv7-unknown-linux-musleabi) cc="$PWD/cross/cc-thumb.sh" cc_target=arm-linux-musleabi ;;
    esac
    triple_var=$(echo "$triple" | tr - _)
    bin_flags=""
    for bin in $bins; do bin_flags="$bin_flags --bin $bin"; done
    # $bin_flags is split on purpose: one word per flag. The release agent
    # also speaks to vStats servers (`--protocol vstats`, Cargo.toml).
    # shellcheck disable=SC2086
    env "CFLAGS_$triple_var=-fno-asynchronous-unwind-tables -fno-unwind-tables" \
        ${cc:+"CC_$triple_var=$cc"} ${cc:+"CC_TARGET=$cc_target"} \
        RUSTC_BOOTSTRAP=1 cargo zigbuild --quiet --release --locked --target "$triple" \
        $bin_flags --features vstats-compat -Z build-std=std,panic_abort \
        --config "target.$triple.rustflags = [$flags]"
    # What the linker's --strip-all keeps but nothing reads at run time:
    # MIPS's .pdr (procedure descriptors, about 120 KB, 10 % of the agent),
    # its empty .mdebug marker, and the compilers' .comment.
    for bin in $bins; do
        "$objcopy" --remove-section=.pdr --remove-section=.mdebug.abi32 --remove-section=.comment \
            "target/$triple/release/$bin" "dist/$bin-linux-$name"
    done
done

(cd dist && sha256sum vstats-*-linux-* > SHA256SUMS)
# The OpenWrt packages, one per package architecture, added to SHA256SUMS.
rm -f dist/vstats-agent_*.ipk
scripts/build-ipk.sh >/dev/null
ls -l dist
