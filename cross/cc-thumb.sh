#!/bin/sh
# The C compiler of the ARMv7 release builds (scripts/build-release.sh sets
# it as CC_<triple>): zig cc as cargo-zigbuild runs it, with C compiled as
# Thumb-2, which every ARMv7 core runs and which is a third smaller than ARM
# code (SQLite: 510 KB instead of 750 KB). Assembly files keep the ARM mode
# their authors wrote them for: ring's do not assemble as Thumb.
#
#   CC_TARGET=arm-linux-musleabihf cc-thumb.sh ARGS...   (zig's target name)
set -eu
mode=+thumb_mode
for arg in "$@"; do
    case $arg in *.S | *.s) mode= ;; esac
done
# cargo-zigbuild's own flags for these targets, plus the mode.
exec cargo-zigbuild zig cc -- -g -fno-sanitize=all "-mcpu=generic+v7a+vfp3-d32+thumb2-neon$mode" \
    -target "$CC_TARGET" "$@"
