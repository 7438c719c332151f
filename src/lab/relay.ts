/**
 * The lab's Hubble Relay as a lab process (like etcd and the world hosts): started by `membrane up`
 * for a multi-node lab, adopted when alive, restarted when dead, stopped by `membrane down`. It runs
 * on the lab host (root namespace) and serves 127.0.0.1:<hubbleRelayPort> (src/lab/relay-main.ts);
 * the address it bound is kept in `<stateDir>/relay/address` for `membrane observe` and `status`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LabPaths } from '../common/paths.ts';
import { childEnv, type MembraneConfig } from '../common/config.ts';
import { MembraneError } from '../common/errors.ts';
import { isAlive, killPids, pidsByCmdline, readPidFile, spawnDetached } from '../sys/proc.ts';

export const RELAY_MARKER = '--id=hubble-relay';

export function labRelayDir(paths: LabPaths): string {
  return join(paths.stateDir, 'relay');
}

export interface LabRelay {
  pid: number;
  /** `host:port` it serves */
  address: string;
  tls: boolean;
}

/** The running Relay of the lab, if any. */
export function labRelay(paths: LabPaths): LabRelay | undefined {
  const dir = labRelayDir(paths);
  const pid = readPidFile(join(dir, 'relay.pid'));
  if (!pid || !isAlive(pid, RELAY_MARKER)) return undefined;
  try {
    const address = readFileSync(join(dir, 'address'), 'utf8').trim();
    return { pid, address, tls: !existsSync(join(dir, 'plaintext')) };
  } catch {
    return undefined;
  }
}

/** Starts (or adopts) the lab's Relay; resolves when it serves. */
export async function ensureLabRelay(config: MembraneConfig, paths: LabPaths, repoRoot: string): Promise<LabRelay> {
  const have = labRelay(paths);
  if (have) return have;
  const dir = labRelayDir(paths);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const ready = join(dir, 'relay.ready');
  await rm(ready, { force: true });
  await rm(join(dir, 'address'), { force: true });
  const plain = config.hubbleRelayDisableServerTls;
  if (plain) await writeFile(join(dir, 'plaintext'), '');
  else await rm(join(dir, 'plaintext'), { force: true });
  const pid = spawnDetached({
    argv: [join(repoRoot, 'bin/node'), '--max-old-space-size=128', join(repoRoot, 'src/lab/relay-main.ts'), RELAY_MARKER,
      `--state-dir=${paths.stateDir}`, `--listen=127.0.0.1:${config.hubbleRelayPort}`, `--ready=${ready}`,
      ...(plain ? ['--disable-server-tls'] : []),
      // the default port may be another lab's: then any free one (`status` and the address file say which)
      ...(config.hubbleRelayPort === 4245 ? ['--fallback-any-port'] : []),
      // the agents' 4244 is plain text only when they were told so; the Relay's client side follows
      ...(config.hubbleDisableTls ? ['--disable-client-tls'] : [])],
    logFile: join(dir, 'relay.log'), pidFile: join(dir, 'relay.pid'),
    env: childEnv({ inherit: false }),
    cwd: repoRoot,
  });
  const deadline = Date.now() + 30_000;
  while (!existsSync(ready)) {
    if (!isAlive(pid) || Date.now() > deadline) {
      throw new MembraneError('LAB_RELAY_FAILED', 'the lab Hubble Relay did not start', { hint: `see ${join(dir, 'relay.log')}` });
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return labRelay(paths) ?? { pid, address: readFileSync(join(dir, 'address'), 'utf8').trim(), tls: !plain };
}

/** Stops the Relay (down): by its pid file, and by its command line when the state directory was lost. */
export async function stopLabRelay(paths: LabPaths): Promise<number> {
  const pids = new Set(pidsByCmdline([RELAY_MARKER, `--state-dir=${paths.stateDir} `]));
  const pid = readPidFile(join(labRelayDir(paths), 'relay.pid'));
  if (pid && isAlive(pid, RELAY_MARKER)) pids.add(pid);
  if (!pids.size) return 0;
  await killPids([...pids], { timeoutMs: 5000 });
  return pids.size;
}
