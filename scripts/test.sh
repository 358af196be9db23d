#!/bin/sh
# The whole test suite, as CI runs it: formatting, lints, the release
# builds (the cross tests run them under qemu), then every test.
set -eu
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --features vstats-compat -- -D warnings
scripts/build-release.sh
cargo test --locked
# What the vstats-compat feature adds (the release builds have it): the
# library's tests, and the vstats_server module of the one integration-test
# binary (tests/integration.rs).
cargo test --locked --features vstats-compat --lib
cargo test --locked --features vstats-compat --test integration vstats_server::
