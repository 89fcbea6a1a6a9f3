#!/usr/bin/env bash
# Installs what `npm run package` and `npm run smoke:exe` need from Debian, beyond Node and npm:
# binutils-aarch64-linux-gnu (aarch64-linux-gnu-strip for the arm64 Node binary),
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (the arm64 sd_notify addon), and to run the
# arm64 executable on an x86-64 machine qemu-user-static with the arm64 C and C++ runtimes
# (libc6-arm64-cross, libstdc++6-arm64-cross, libgcc-s1-arm64-cross).
# Needs root (or sudo); does nothing when everything is already there.
set -euo pipefail
need=()
command -v strip >/dev/null || need+=(binutils)
command -v gcc >/dev/null || need+=(gcc)
command -v aarch64-linux-gnu-strip >/dev/null || need+=(binutils-aarch64-linux-gnu)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -f /usr/aarch64-linux-gnu/include/stdio.h ] || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
[ -f /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need+=(libc6-arm64-cross)
[ -f /usr/aarch64-linux-gnu/lib/libstdc++.so.6 ] || need+=(libstdc++6-arm64-cross)
[ -f /usr/aarch64-linux-gnu/lib/libgcc_s.so.1 ] || need+=(libgcc-s1-arm64-cross)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
