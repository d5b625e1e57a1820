#!/usr/bin/env bash
# Lays out the npm packages of a release the usual napi-rs way, from the addons built
# beside index.js (fencelock.<triple>.node, by scripts/build-addon.sh --release, one
# per platform, each on its own build machine or cross-compiled: see docs/node.md):
#
#   OUT/fencelock/                  the JS package, no binary; optionalDependencies on
#                                   every platform package at the same version
#   OUT/fencelock-<triple>/         one per .node file found: the binary, with `os`,
#                                   `cpu` and `libc` so npm installs only the one that fits
#
# Nothing is published: the script prints the `npm publish` commands (platform
# packages first, then the JS package).
#
# Usage: crates/fencelock-node/scripts/npm-packages.sh OUT_DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
cd "$(dirname "$0")/.."
pkg=$PWD
mkdir -p "$1"
out=$(cd "$1" && pwd)
version=$(node -p 'require("./package.json").version')

shopt -s nullglob
built=(fencelock.*.node)
[ ${#built[@]} -gt 0 ] || { echo "error: no fencelock.<triple>.node here: run scripts/build-addon.sh --release first" >&2; exit 1; }

for node_file in "${built[@]}"; do
    triple=${node_file#fencelock.}
    triple=${triple%.node}
    dir=$out/fencelock-$triple
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$node_file" "$dir/"
    TRIPLE=$triple VERSION=$version node -e '
      const [os, cpu, abi] = process.env.TRIPLE.split("-");
      const p = {
        name: `fencelock-${process.env.TRIPLE}`,
        version: process.env.VERSION,
        description: `The ${process.env.TRIPLE} binary of the fencelock npm package`,
        license: "MIT OR Apache-2.0",
        repository: { type: "git", url: "https://github.com/fencelock/fencelock" },
        main: `fencelock.${process.env.TRIPLE}.node`,
        files: [`fencelock.${process.env.TRIPLE}.node`],
        os: [os],
        cpu: [cpu],
        engines: { node: ">=18" },
      };
      if (abi) p.libc = [abi === "gnu" ? "glibc" : "musl"];
      process.stdout.write(JSON.stringify(p, null, 2) + "\n");
    ' >"$dir/package.json"
    echo "Prebuilt \`$triple\` binary of [fencelock](https://www.npmjs.com/package/fencelock); install \`fencelock\`, not this." >"$dir/README.md"
    echo "laid out $dir"
done

dir=$out/fencelock
rm -rf "$dir" && mkdir -p "$dir"
cp index.js index.d.ts binding.js README.md "$dir/"
cp ../../LICENSE-MIT ../../LICENSE-APACHE "$dir/"
VERSION=$version node -e '
  const p = require("./package.json");
  const { SUPPORTED } = require("./binding.js");
  delete p.devDependencies;
  delete p.scripts;
  p.files = p.files.filter((f) => !f.endsWith(".node"));
  p.optionalDependencies = Object.fromEntries(SUPPORTED.map((t) => [`fencelock-${t}`, process.env.VERSION]));
  process.stdout.write(JSON.stringify(p, null, 2) + "\n");
' >"$dir/package.json"
echo "laid out $dir"
echo
echo "To publish (platform packages first):"
for node_file in "${built[@]}"; do
    triple=${node_file#fencelock.}
    echo "  npm publish $out/fencelock-${triple%.node}"
done
echo "  npm publish $out/fencelock"
