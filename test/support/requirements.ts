/**
 * What a test needs from the machine (root for namespaces and eBPF, clang for C builds). Run by
 * hand, a test whose requirement is missing is skipped with the reason. Under the test command
 * (scripts/test.sh sets MEMBRANE_TEST_STRICT=1, as CI does) a missing requirement FAILS: a
 * suite that silently skips its kernel tests would pass while the feature is broken.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export type Requirement = 'root' | 'clang' | 'etcd' | 'wireguard' | 'promtool';

function runs(cmd: string): boolean {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const HAVE: Record<Requirement, () => boolean> = {
  root: () => process.getuid?.() === 0,
  etcd: () => existsSync('/usr/bin/etcd') && existsSync('/usr/bin/etcdctl'),
  wireguard: () => ['/usr/bin/wg', '/usr/bin/wireguard-go', '/usr/bin/tcpdump'].every((f) => existsSync(f)),
  clang: () => runs('clang'),
  promtool: () => runs('promtool'),
};

const WHY: Record<Requirement, string> = {
  root: 'needs root (network namespaces, veths, eBPF)',
  clang: 'needs clang (bash scripts/setup.sh installs it)',
  wireguard: 'needs wg, wireguard-go and tcpdump (wireguard-tools, wireguard-go, tcpdump: bash scripts/setup.sh installs them)',
  etcd: 'needs etcd and etcdctl (etcd-server, etcd-client: bash scripts/setup.sh installs them)',
  promtool: 'needs promtool (bash scripts/setup.sh installs prometheus)',
};

/**
 * The `skip` option for a test that needs `reqs`: false when all are there; the reason when one
 * is missing and skipping is allowed; under MEMBRANE_TEST_STRICT=1 it throws instead, which
 * fails the test file.
 */
export function skipUnless(...reqs: Requirement[]): false | string {
  const missing = reqs.filter((r) => !HAVE[r]());
  if (missing.length === 0) return false;
  const why = missing.map((r) => WHY[r]).join('; ');
  if (process.env.MEMBRANE_TEST_STRICT === '1') {
    throw new Error(`test requirement missing: ${why}. The test command runs every test; run it as root on a machine set up by scripts/setup.sh.`);
  }
  return why;
}
