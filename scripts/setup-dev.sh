#!/bin/sh
# Installs what building, testing and benchmarking vstats needs on a fresh
# Debian machine with rustup. Idempotent: safe to run before every test run.
set -eu
cd "$(dirname "$0")/.."

installed_components=$(rustup component list --installed)
for component in rustfmt clippy rust-src llvm-tools; do
    echo "$installed_components" | grep -q "^$component" || rustup component add "$component"
done
# llvm-tools: llvm-objcopy, which trims the release binaries of every target.
# armv7, armv6 and MIPS musl have no prebuilt std: it is built from rust-src
# (cross/README.md).
installed_targets=$(rustup target list --installed)
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    echo "$installed_targets" | grep -qx "$target" || rustup target add "$target"
done

# zig is the C compiler and linker of the musl builds (scripts/build-release.sh).
if [ ! -x .tools/bin/cargo-zigbuild ] || [ ! -x .tools/bin/python-zig ]; then
    python3 -m venv .tools
    .tools/bin/pip install --quiet --disable-pip-version-check ziglang cargo-zigbuild
fi

# Debian packages: valgrind (bench-agent.sh), busybox, dash, shellcheck and
# systemd-analyze (installer and packaging tests), systemd-container and
# mmdebstrap (a real systemd booted in systemd-nspawn: tests/systemd.rs),
# prometheus (scrape test; promtool for /metrics and the alerting rules),
# qemu-user-static (cross tests), chromium and a CJK font (browser test),
# iproute2 (ss: a test reads the relay's kernel send buffers), sqlite3 (a
# user's reads of the history database while the relay writes it).
missing=""
for package in valgrind busybox dash shellcheck systemd systemd-container mmdebstrap prometheus qemu-user-static chromium fonts-wqy-microhei iproute2 sqlite3; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        # $missing is a list of package names: split on purpose.
        # shellcheck disable=SC2086
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    else
        echo "setup-dev: please install:$missing" >&2
    fi
fi
