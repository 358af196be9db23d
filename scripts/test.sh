#!/bin/sh
# The whole test suite, as CI runs it: formatting, lints, the release
# builds (the cross tests run them under qemu), then every test.
set -eu
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
scripts/build-release.sh
cargo test --locked
