#!/bin/sh
# Installs what building and testing vstats needs on a fresh Debian machine
# with rustup. Idempotent: safe to run before every test run.
set -eu

need_rustup_component() {
    rustup component list --installed 2>/dev/null | grep -q "^$1" || rustup component add "$1"
}

need_rustup_component rustfmt
need_rustup_component clippy
rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
    rustup target add x86_64-unknown-linux-musl
