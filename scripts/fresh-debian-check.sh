#!/usr/bin/env bash
# Proves the README's promise on a bare Debian 12: a minbase bookworm root filesystem with only
# git and iproute2 added, a clone of this repository, `bash scripts/setup.sh`, then (in a network
# namespace of its own) `membrane up` + the quickstart + `membrane down`, the unit tests and one
# integration test file. Run as root. Everything happens in a private mount namespace, so the
# chroot's mounts vanish with this script even if it is killed; the root filesystem is removed at
# the end unless MEMBRANE_FRESH_KEEP=1.
#
#   bash scripts/fresh-debian-check.sh [rootfs-dir]        (default /var/tmp/membrane-fresh-debian)
#
# Environment: MEMBRANE_FRESH_MIRROR (Debian mirror, default http://deb.debian.org/debian),
# MEMBRANE_FRESH_REF (branch or commit to clone, default this checkout's HEAD),
# MEMBRANE_FRESH_INTEGRATION (integration test file, default test/integration/e2e/cilium-l3l4.test.ts),
# MEMBRANE_FRESH_STEPS (default "setup lab unit integration"; "setup" alone stops after setup.sh;
# without "setup", a kept root filesystem's clone is reused as it is),
# MEMBRANE_FRESH_KEEP=1 keeps the root filesystem (a rerun then skips debootstrap).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rootfs="$(readlink -m "${1:-/var/tmp/membrane-fresh-debian}")"
mirror="${MEMBRANE_FRESH_MIRROR:-http://deb.debian.org/debian}"
ref="${MEMBRANE_FRESH_REF:-$(git -C "$repo" rev-parse HEAD)}"
integration="${MEMBRANE_FRESH_INTEGRATION:-test/integration/e2e/cilium-l3l4.test.ts}"
steps="${MEMBRANE_FRESH_STEPS:-setup lab unit integration}"

[ "$(id -u)" = 0 ] || { echo "fresh-debian-check: run as root" >&2; exit 1; }
case "$rootfs" in /|/usr|/var|/tmp|/work|/root|/home) echo "fresh-debian-check: refusing rootfs $rootfs" >&2; exit 1;; esac

# Re-run in a private mount namespace: every mount below is invisible to the machine and is
# released when the last process of this namespace exits.
if [ "${MEMBRANE_FRESH_IN_NS:-}" != 1 ]; then
  export MEMBRANE_FRESH_IN_NS=1
  exec unshare --mount --propagation private bash "${BASH_SOURCE[0]}" "$@"
fi

log() { echo "== fresh-debian-check: $*"; }
in_root() {
  chroot "$rootfs" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

cleanup() {
  local rc=$?
  set +e
  # Processes still running inside the chroot were started by this script: end them by pid.
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$rootfs" ] && kill -9 "$pid" 2>/dev/null
  done
  sleep 0.5
  for m in $(awk -v r="$rootfs" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  if [ "${MEMBRANE_FRESH_KEEP:-}" != 1 ] && [ -d "$rootfs" ]; then
    if awk -v r="$rootfs" 'index($2, r) == 1 { f = 1 } END { exit !f }' /proc/self/mounts; then
      echo "fresh-debian-check: mounts remain under $rootfs; not removing it" >&2
    else
      log "removing $rootfs"; rm -rf --one-file-system "$rootfs"
    fi
  fi
  [ "$rc" = 0 ] && log "PASS" || log "FAIL (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -x "$rootfs/usr/bin/apt-get" ]; then
  log "debootstrap --variant=minbase bookworm $rootfs $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
fi

# `ip -n`/`ip netns exec` run `mount --make-rslave /`, which needs / to be a mount point.
mount --bind "$rootfs" "$rootfs"
mount -t proc proc "$rootfs/proc"
mount -t sysfs sysfs "$rootfs/sys"
mount -t bpf bpf "$rootfs/sys/fs/bpf"             # a bpffs of its own: no pin can collide with the machine's
mount --bind /sys/fs/cgroup "$rootfs/sys/fs/cgroup"
mount --bind /dev "$rootfs/dev"
mount --bind /dev/pts "$rootfs/dev/pts"
mount -t tmpfs tmpfs "$rootfs/dev/shm"
mount -t tmpfs tmpfs "$rootfs/run"
mkdir -p "$rootfs/run/lock"
cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
# The chroot shares the machine's network: no package's maintainer script may start its daemon
# (dnsmasq, haproxy, etcd, iperf3) there. Debian's policy-rc.d convention, as container images use.
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"; chmod 755 "$rootfs/usr/sbin/policy-rc.d"

log "apt-get install git iproute2 (the README's only requirements besides the base system)"
in_root apt-get update -qq
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git iproute2 >/dev/null

# A machine whose egress passes a TLS-inspecting proxy trusts that proxy's CA in
# /usr/local/share/ca-certificates; the chroot gets the same trust, or npm cannot reach the registry.
extra_ca=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  in_root update-ca-certificates >/dev/null
  extra_ca=(NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt)
fi

if [[ " $steps " == *" setup "* ]]; then
log "clone $repo at $ref"
rm -rf "$rootfs/root/membrane" "$rootfs/root/src.git"
git clone -q --bare "$repo" "$rootfs/root/src.git"
git -C "$repo" rev-parse "$ref^{commit}" >/dev/null
git -C "$repo" push -q "$rootfs/root/src.git" "$(git -C "$repo" rev-parse "$ref^{commit}"):refs/heads/check"
in_root git clone -q --branch check /root/src.git /root/membrane

log "bash scripts/setup.sh (as root, in the chroot)"
in_root env "${extra_ca[@]}" bash -c 'cd /root/membrane && bash scripts/setup.sh'
fi
[[ " $steps " == *" lab "* || " $steps " == *" unit "* || " $steps " == *" integration "* ]] || exit 0

# The rest runs in a fresh network namespace: no link to the machine's network, so no lab
# address can route anywhere but into the lab.
netcheck=$(cat <<'EOF'
set -euo pipefail
cd /root/membrane
ip link set lo up
[ "$(ip -o link | grep -vc ': lo:')" = 0 ] || { echo "not an empty network namespace" >&2; exit 1; }
export MEMBRANE_LAB=freshchk
if [[ " $STEPS " == *" lab "* ]]; then
  echo "== membrane up (lab $MEMBRANE_LAB)"
  trap 'bin/membrane down || true' EXIT
  bin/membrane up
  bin/membrane apply -f examples/quickstart/
  bin/membrane get pods -A -o wide
  bin/membrane get endpoints
  out=$(bin/membrane exec -n shop client -- curl -s -m 10 http://api.shop.svc.cluster.local/)
  echo "client -> api: $out"
  [ -n "$out" ]
  bin/membrane observe --last 5
  bin/membrane status
  bin/membrane down
  trap - EXIT
  [ -z "$(ip netns list)" ] || { echo "membrane down left namespaces: $(ip netns list)" >&2; exit 1; }
fi
if [[ " $STEPS " == *" unit "* ]]; then
  echo "== unit tests"
  MEMBRANE_TEST_STRICT=1 bin/node --test --test-concurrency=1 --test-reporter=dot "test/unit/**/*.test.ts"
fi
if [[ " $STEPS " == *" integration "* ]]; then
  echo "== $INTEGRATION"
  MEMBRANE_TEST_STRICT=1 bin/node --test --test-concurrency=1 --test-timeout=600000 "$INTEGRATION"
fi
EOF
)
log "lab and tests in a network namespace of their own ($steps)"
in_root env STEPS="$steps" INTEGRATION="$integration" unshare --net bash -c "$netcheck"
