#!/bin/sh
# The whole test suite, as CI runs it: formatting, lints, then every test.
set -eu
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
