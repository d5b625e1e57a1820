#!/usr/bin/env bash
# Builds the native addon with cargo and copies it to fencelock.<triple>.node beside
# index.js, where binding.js looks first. Debug by default (CI shares the workspace's
# debug build); --release for a binary to ship.
#
# Usage: crates/fencelock-node/scripts/build-addon.sh [--release] [--target TRIPLE]
#   --target: a Rust target triple (e.g. aarch64-unknown-linux-gnu) for which a linker
#             is set up (see docs/node.md, "Other platforms"); the .node file is named
#             after its napi-rs triple (linux-arm64-gnu …).
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=$PWD
profile=debug
cargo_args=()
target=""
while [ $# -gt 0 ]; do
    case "$1" in
    --release) profile=release; cargo_args+=(--release) ;;
    --target) target=$2; cargo_args+=(--target "$2"); shift ;;
    *) echo "usage: $0 [--release] [--target TRIPLE]" >&2; exit 2 ;;
    esac
    shift
done
cargo build -p fencelock-node "${cargo_args[@]}"
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
rust_triple=${target:-$(rustc -vV | sed -n 's/^host: //p')}
case "$rust_triple" in
x86_64-unknown-linux-gnu) triple=linux-x64-gnu ext=so ;;
aarch64-unknown-linux-gnu) triple=linux-arm64-gnu ext=so ;;
x86_64-unknown-linux-musl) triple=linux-x64-musl ext=so ;;
aarch64-unknown-linux-musl) triple=linux-arm64-musl ext=so ;;
x86_64-apple-darwin) triple=darwin-x64 ext=dylib ;;
aarch64-apple-darwin) triple=darwin-arm64 ext=dylib ;;
*) echo "error: no napi-rs triple known for $rust_triple" >&2; exit 1 ;;
esac
dir=$target_dir/${target:+$target/}$profile
cp "$dir/libfencelock_node.$ext" "$pkg/fencelock.$triple.node"
echo "built $pkg/fencelock.$triple.node ($profile)"
