#!/usr/bin/env bash
# Compiles bpf/*.bpf.c into dist/bpf/*.o (clang, no CO-RE: only __sk_buff and uapi types).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$root/dist/bpf"
shopt -s nullglob
for src in "$root"/bpf/*.bpf.c; do
  out="$root/dist/bpf/$(basename "${src%.c}").o"
  if [ ! -f "$out" ] || [ -n "$(find "$src" "$root/bpf/lib" "$root"/bpf/*.bpf.c -newer "$out" 2>/dev/null | head -1)" ]; then
    clang -O2 -g -Wall -Werror -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -I"$root/bpf" -c "$src" -o "$out"
  fi
done
