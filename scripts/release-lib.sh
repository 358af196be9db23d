# shellcheck shell=sh
# What the release scripts (build-ipk.sh, openwrt-feed.sh) share; sourced,
# not run.

# cargo_version ROOT: the version in ROOT/Cargo.toml's [package].
cargo_version() {
    awk -F '"' '/^\[/ { in_package = ($0 == "[package]") }
        in_package && /^version *=/ { print $2; exit }' "$1/Cargo.toml"
}

# sum_line FILE SUMS: FILE's line in the SHA256SUMS file SUMS (either of
# sha256sum's forms, text or binary `*`), or nothing.
sum_line() {
    awk -v file="$1" '$2 == file || $2 == "*" file { print; exit }' "$2"
}
