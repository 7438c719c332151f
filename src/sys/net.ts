/**
 * Typed wrappers around iproute2 and sysctl for network namespaces (the lab's only way to touch
 * links, addresses and routes). Every failure is a MembraneError with a code and a hint.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { run, runOk } from './proc.ts';
import { MembraneError } from '../common/errors.ts';

const NETNS_DIR = '/run/netns';

export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${name}`;
}

export function netnsExists(name: string): boolean {
  return existsSync(netnsPath(name));
}

/**
 * Lets sockets of the caller's namespace bind addresses that are not local to it
 * (net.ipv4.ip_nonlocal_bind and net.ipv6.ip_nonlocal_bind, both per namespace): the DNS proxy
 * answers from the original destination's address, of either family. Returns why it could not,
 * or undefined. (A namespace without IPv6 has no net.ipv6 directory: nothing to allow there.)
 */
export function allowNonLocalBind(): string | undefined {
  const errs: string[] = [];
  for (const f of ['/proc/sys/net/ipv4/ip_nonlocal_bind', '/proc/sys/net/ipv6/ip_nonlocal_bind']) {
    if (f.includes('ipv6') && !existsSync(f)) continue;
    try { writeFileSync(f, '1'); } catch (e) { errs.push(String(e)); }
  }
  return errs.length ? errs.join('; ') : undefined;
}

/** `ip [-n NS] ARGS`; throws NET_IP_FAILED. */
export function ip(args: string[], netns?: string): Promise<string> {
  return runOk('ip', netns ? ['-n', netns, ...args] : args, { code: 'NET_IP_FAILED' });
}

/** `ip -j [-n NS] ARGS` parsed. */
export async function ipJson<T = unknown>(args: string[], netns?: string): Promise<T> {
  const out = await runOk('ip', netns ? ['-j', '-n', netns, ...args] : ['-j', ...args], { code: 'NET_IP_FAILED' });
  const text = out.trim();
  if (!text) return [] as T;
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new MembraneError('NET_IP_BAD_JSON', `ip -j ${args.join(' ')}: unparseable output`, { cause: e, hint: 'iproute2 5.x or newer is needed' });
  }
}

/**
 * Runs many `ip` commands in one process (`ip -batch -`). With `force`, errors (such as
 * "File exists" on an idempotent re-run) do not stop the batch and are returned instead.
 */
export async function ipBatch(lines: string[], netns?: string, force = false): Promise<string> {
  if (!lines.length) return '';
  const args = [...(netns ? ['-n', netns] : []), ...(force ? ['-force'] : []), '-batch', '-'];
  const r = await run('ip', args, { input: lines.join('\n') + '\n' });
  if (r.code !== 0 && !force) {
    throw new MembraneError('NET_IP_FAILED', `ip ${netns ? `-n ${netns} ` : ''}-batch: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`, {
      hint: 'this needs root and iproute2; run `membrane down` and `membrane up` to rebuild the lab',
    });
  }
  return r.stderr;
}

export async function netnsList(): Promise<string[]> {
  const list = await ipJson<{ name: string }[]>(['netns', 'list']);
  return list.map((n) => n.name);
}

export async function netnsAdd(name: string): Promise<void> {
  if (netnsExists(name)) return;
  const r = await run('ip', ['netns', 'add', name]);
  if (r.code !== 0 && !netnsExists(name)) {
    throw new MembraneError('NET_NETNS_ADD', `cannot create network namespace ${name}: ${r.stderr.trim()}`, { hint: 'this needs root (CAP_SYS_ADMIN)' });
  }
}

export async function netnsDelete(name: string): Promise<void> {
  if (!netnsExists(name)) return;
  const r = await run('ip', ['netns', 'delete', name]);
  if (r.code !== 0 && netnsExists(name)) {
    throw new MembraneError('NET_NETNS_DELETE', `cannot delete network namespace ${name}: ${r.stderr.trim()}`, { hint: `check \`ip netns pids ${name}\`` });
  }
}

/** Pids of the processes whose network namespace is NAME. */
export async function netnsPids(name: string): Promise<number[]> {
  if (!netnsExists(name)) return [];
  const r = await run('ip', ['netns', 'pids', name]);
  return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

/** `sysctl -w k=v ...` inside a namespace (nsenter --net keeps the host's mounts; /proc/sys/net follows the netns). */
export async function sysctlIn(netns: string, settings: Record<string, string | number>): Promise<void> {
  const kv = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  await runOk('nsenter', [`--net=${netnsPath(netns)}`, 'sysctl', '-q', '-w', ...kv], {
    code: 'NET_SYSCTL_FAILED', hint: 'this needs root and procps (sysctl)',
  });
}

export interface LinkInfo {
  ifindex: number;
  ifname: string;
  address?: string;
  operstate?: string;
  link_netnsid?: number;
}

export async function linkShow(name: string, netns?: string): Promise<LinkInfo | undefined> {
  const r = await run('ip', [...(netns ? ['-n', netns] : []), '-j', 'link', 'show', 'dev', name]);
  if (r.code !== 0) return undefined;
  try {
    return (JSON.parse(r.stdout) as LinkInfo[])[0];
  } catch {
    return undefined;
  }
}

export interface AddrInfo {
  ifname: string;
  ifindex: number;
  addr_info: { family: string; local: string; prefixlen: number }[];
}

export async function addrShow(name: string, netns?: string): Promise<AddrInfo | undefined> {
  const r = await run('ip', [...(netns ? ['-n', netns] : []), '-j', 'addr', 'show', 'dev', name]);
  if (r.code !== 0) return undefined;
  try {
    return (JSON.parse(r.stdout) as AddrInfo[])[0];
  } catch {
    return undefined;
  }
}

export async function linkDelete(name: string, netns?: string): Promise<void> {
  await run('ip', [...(netns ? ['-n', netns] : []), 'link', 'del', 'dev', name]);
}

/** Argv that runs a command in a namespace with its /etc/netns/NAME files bind-mounted (`ip netns exec`). */
export function netnsExecArgv(netns: string, argv: string[]): string[] {
  return ['ip', 'netns', 'exec', netns, ...argv];
}

/** Argv that runs a command in a namespace's network only (host mounts kept: /sys/fs/bpf stays visible). */
export function nsenterNetArgv(netns: string, argv: string[]): string[] {
  return ['nsenter', `--net=${netnsPath(netns)}`, ...argv];
}

/**
 * `ip ARGS` inside the network namespace at PATH (a runtime's netns file such as
 * /run/netns/cni-…, /proc/PID/ns/net): `ip -n` only takes names under /run/netns.
 */
export function ipAt(path: string, args: string[]): Promise<string> {
  return runOk('nsenter', [`--net=${path}`, 'ip', ...args], { code: 'NET_IP_FAILED', hint: 'this needs root; is the namespace file still there?' });
}

/** Shell commands writing net.* sysctls under /proc/sys (best effort: errors are silent). */
function sysctlWrites(sysctls: Record<string, number>): string[] {
  return Object.entries(sysctls).map(([k, v]) => {
    if (!/^net(\.[a-z0-9_]+)+$/.test(k) || !Number.isInteger(v)) throw new MembraneError('NET_SYSCTL_FAILED', `bad sysctl ${k}=${v}`, { hint: 'a net.* key of [a-z0-9_] parts and an integer value' });
    return `{ echo ${v} > /proc/sys/${k.replaceAll('.', '/')}; } 2>/dev/null`;
  });
}

/**
 * `ip -batch -` inside the network namespace at PATH (see ipAt). `sysctls` (net.* keys) are
 * written first (best effort) by the same process: nsenter runs a shell that writes /proc/sys (which follows
 * the netns) and execs ip, so a container's whole setup is one child process, not three.
 */
export async function ipBatchAt(path: string, lines: string[], sysctls: Record<string, number> = {}): Promise<void> {
  if (!lines.length) return;
  const writes = sysctlWrites(sysctls);
  // best effort, as `sysctl -w` errors were ignored (a kernel without IPv6 has no such keys)
  const argv = writes.length ? ['sh', '-c', `${writes.join('; ')}; exec ip -batch -`] : ['ip', '-batch', '-'];
  const r = await run('nsenter', [`--net=${path}`, ...argv], { input: lines.join('\n') + '\n' });
  if (r.code !== 0) {
    throw new MembraneError('NET_IP_FAILED', `ip -batch in ${path}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`, { hint: 'this needs root; is the namespace file still there?' });
  }
}

/**
 * Whether a link exists in this process's own namespace, without a process: every IPv4-capable
 * link has /proc/sys/net/ipv4/conf/NAME, and /proc/sys follows the netns (sysfs does not: it is
 * the host's mount when the agent runs in a namespace standing in for one).
 */
export function linkPresentSelf(name: string): boolean {
  return /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$/.test(name) && existsSync(`/proc/sys/net/ipv4/conf/${name}`);
}

/** The addresses of a link in the network namespace at PATH; undefined when it (or the namespace) is gone. */
export async function addrShowAt(path: string, name: string): Promise<AddrInfo | undefined> {
  if (!existsSync(path)) return undefined;
  const r = await run('nsenter', [`--net=${path}`, 'ip', '-j', 'addr', 'show', 'dev', name]);
  if (r.code !== 0) return undefined;
  try {
    return (JSON.parse(r.stdout) as AddrInfo[])[0];
  } catch {
    return undefined;
  }
}

/** `sysctl -w` in the namespace at PATH (or this process's own with no path). */
export async function sysctlAt(path: string | undefined, settings: Record<string, string | number>): Promise<void> {
  const kv = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  const argv = path ? ['nsenter', `--net=${path}`, 'sysctl', '-q', '-w', ...kv] : ['sysctl', '-q', '-w', ...kv];
  await runOk(argv[0]!, argv.slice(1), { code: 'NET_SYSCTL_FAILED', hint: 'this needs root and procps (sysctl)' });
}

/** IPv6 off on one link of this process's own namespace (/proc/sys follows the netns), without a process. */
export async function disableIpv6Self(link: string): Promise<void> {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(link)) return;
  await writeFile(`/proc/sys/net/ipv6/conf/${link}/disable_ipv6`, '1').catch(() => {});
}
