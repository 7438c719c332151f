/**
 * The lab's etcd (Debian's etcd-server, 3.4): one member, run as a lab process inside the
 * underlay namespace (its TCP ports stay there), data under `<stateDir>/etcd/data`. Agents and the
 * CLI reach it through a unix socket in the state directory: filesystem sockets cross network
 * namespaces, so every node's agent (nsenter --net, host mounts) connects without a route.
 *
 * etcd 3.4 wants `host:port` even for unix sockets: `unix://etcd.sock:0` creates the file
 * `etcd.sock:0` in its working directory; gRPC clients dial `unix:<dir>/etcd.sock:0`.
 */
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { LabPaths } from '../common/paths.ts';
import { MembraneError } from '../common/errors.ts';
import { isAlive, readPidFile, spawnDetached } from '../sys/proc.ts';
import { netnsExecArgv, netnsPath } from '../sys/net.ts';
import { underlayNetnsName } from './names.ts';
import { openEtcdStore } from '../kvstore/etcd.ts';

export const ETCD_BINARY = '/usr/bin/etcd';
const MARKER = '--name=membrane-lab';

export function labEtcdDir(paths: LabPaths): string {
  return join(paths.stateDir, 'etcd');
}

/** The endpoint agents and the CLI use for the lab's etcd. */
export function labEtcdEndpoint(paths: LabPaths): string {
  return `unix:${join(labEtcdDir(paths), 'etcd.sock:0')}`;
}

/** etcd's command line for one member serving `dir` (unix socket + loopback of its namespace). */
export function etcdArgv(dir: string, name = 'membrane-lab', clientPort = 2379, peerPort = 2380): string[] {
  return [
    ETCD_BINARY, `--name=${name}`, `--data-dir=${join(dir, 'data')}`,
    `--listen-client-urls=http://127.0.0.1:${clientPort},unix://etcd.sock:0`, `--advertise-client-urls=http://127.0.0.1:${clientPort}`,
    `--listen-peer-urls=http://127.0.0.1:${peerPort}`, `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
    `--initial-cluster=${name}=http://127.0.0.1:${peerPort}`,
    // history is compacted (watchers re-list), the lab's keys are small
    '--auto-compaction-mode=periodic', '--auto-compaction-retention=5m', '--logger=zap', '--log-outputs=stderr',
  ];
}

/** Starts (or adopts) the lab's etcd; resolves when it answers. Returns its pid. */
export async function ensureLabEtcd(paths: LabPaths): Promise<number> {
  if (!existsSync(ETCD_BINARY)) {
    throw new MembraneError('LAB_NO_ETCD', `a multi-node lab needs etcd (${ETCD_BINARY} is missing)`, { hint: 'install it: apt-get install etcd-server (scripts/setup.sh does)' });
  }
  const dir = labEtcdDir(paths);
  const pidFile = join(dir, 'etcd.pid');
  const ns = underlayNetnsName(paths.lab);
  let pid = readPidFile(pidFile);
  if (!(pid && isAlive(pid, MARKER, netnsPath(ns)))) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await rm(join(dir, 'etcd.sock:0'), { force: true });
    pid = spawnDetached({ argv: netnsExecArgv(ns, etcdArgv(dir)), logFile: join(dir, 'etcd.log'), pidFile, cwd: dir, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
  }
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (existsSync(join(dir, 'etcd.sock:0'))) {
      try {
        const kv = await openEtcdStore({ endpoints: [labEtcdEndpoint(paths)], connectTimeoutMs: 2000 });
        await kv.close();
        return pid;
      } catch { /* not serving yet */ }
    }
    if (!isAlive(pid) || Date.now() > deadline) {
      throw new MembraneError('LAB_ETCD_FAILED', 'the lab etcd did not start', { hint: `see ${join(dir, 'etcd.log')}` });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
