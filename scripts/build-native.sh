#!/usr/bin/env bash
# Builds the sd_notify addon (src/ops/native/sd_notify.c) into dist/native/.
#   scripts/build-native.sh            for this machine's architecture
#   scripts/build-native.sh arm64 x64  for the given ones (arm64 needs aarch64-linux-gnu-gcc)
# Without a compiler it says so and exits 0: the broker then falls back to the
# systemd-notify command.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist/native
archs=("$@")
[ ${#archs[@]} -eq 0 ] && archs=("$(node -p process.arch)")
for arch in "${archs[@]}"; do
  case "$arch" in
    x64) cc=${CC_X64:-gcc}; [ "$(uname -m)" = x86_64 ] || cc=x86_64-linux-gnu-gcc ;;
    arm64) cc=${CC_ARM64:-aarch64-linux-gnu-gcc}; [ "$(uname -m)" = aarch64 ] && cc=gcc ;;
    *) echo "build-native: unsupported arch $arch" >&2; exit 2 ;;
  esac
  if ! command -v "$cc" >/dev/null; then
    echo "build-native: no $cc; sd_notify addon for $arch not built (systemd-notify fallback)" >&2
    continue
  fi
  "$cc" -O2 -Wall -Wextra -fPIC -shared -o "dist/native/sd_notify-linux-$arch.node" src/ops/native/sd_notify.c
done
