/**
 * Test topology: a "node" network namespace and pod namespaces joined to it by veth pairs, all
 * in 10.250.0.0/16 with names prefixed `mdp-`. The root namespace is never touched (no routes,
 * no links). Pods use a /32 address and `default via 10.250.0.1 dev eth0 onlink`; the gateway
 * address sits on lo in the node namespace, which forwards (ip_forward=1 inside).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const NODE_BIN = `${ROOT}bin/node`;
export const NET_TOOL = fileURLToPath(new URL('./net-tool.ts', import.meta.url));
export const GW = '10.250.0.1';
/** IPv6 gateway of every pod: the same link-local address on each host-side veth (as a router's). */
export const GW6 = 'fe80::1';
/** A pod's IPv6 address (ULA, never routed off the machine): fd00:10:250:<subnet>::<i+2>. */
export const podIp6 = (subnet: number, i: number): string => `fd00:10:250:${subnet}::${i + 2}`;

export function sh(cmd: string, args: string[], opts: { allowFail?: boolean; input?: string } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input: opts.input ?? '' });
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.stderr || err.message}`);
  }
}

export interface Pod { name: string; ns: string; ip: string; hostIf: string; ifindex: number; id: number; mac: string; ip6?: string }

export interface Topo { tag: string; nodeNs: string; pods: Pod[]; destroy(): void }

/** IPv6 on (or off) inside one of the test's namespaces (never the host's), without DAD delays. */
function ipv6In(ns: string, on: boolean, forward = false): void {
  const v = on ? 0 : 1;
  sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.all.disable_ipv6=${v}`, `net.ipv6.conf.default.disable_ipv6=${v}`,
    ...(on ? ['net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0', `net.ipv6.conf.all.forwarding=${forward ? 1 : 0}`] : [])]);
}

/**
 * Creates mdp-<tag>-node and pods mdp-<tag>-p<i> with 10.250.<subnet>.<i+2>/32, and with `ipv6`
 * also podIp6(subnet, i)/128 (default route via fe80::1 on the host veth, forwarding in the node
 * namespace). IPv6 is switched on or off only inside these namespaces.
 */
export function createTopo(tag: string, npods: number, subnet = 1, ipv6 = false): Topo {
  const nodeNs = `mdp-${tag}-node`;
  const made: string[] = [];
  const destroy = () => {
    for (const ns of made.reverse()) sh('ip', ['netns', 'del', ns], { allowFail: true });
  };
  try {
    sh('ip', ['netns', 'add', nodeNs]);
    made.push(nodeNs);
    const n = (args: string[]) => sh('ip', ['-n', nodeNs, ...args]);
    n(['link', 'set', 'lo', 'up']);
    // the gateway address (no dummy module on this kernel: lo answers ARP for it just the same)
    n(['addr', 'add', `${GW}/32`, 'dev', 'lo']);
    if (ipv6) ipv6In(nodeNs, true, true);
    sh('ip', ['netns', 'exec', nodeNs, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0']);
    const pods: Pod[] = [];
    for (let i = 0; i < npods; i++) {
      const ns = `mdp-${tag}-p${i}`;
      sh('ip', ['netns', 'add', ns]);
      made.push(ns);
      if (ipv6) ipv6In(ns, true);
      const hostIf = `mdp${tag.slice(0, 6)}${i}`;
      const ip = `10.250.${subnet}.${i + 2}`;
      n(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      n(['link', 'set', hostIf, 'up']);
      n(['route', 'add', `${ip}/32`, 'dev', hostIf]);
      const p = (args: string[]) => sh('ip', ['-n', ns, ...args]);
      p(['link', 'set', 'lo', 'up']);
      p(['addr', 'add', `${ip}/32`, 'dev', 'eth0']);
      p(['link', 'set', 'eth0', 'up']);
      p(['route', 'add', 'default', 'via', GW, 'dev', 'eth0', 'onlink']);
      const ip6 = ipv6 ? podIp6(subnet, i) : undefined;
      if (ip6) {
        n(['addr', 'add', `${GW6}/64`, 'dev', hostIf, 'nodad']);
        n(['-6', 'route', 'add', `${ip6}/128`, 'dev', hostIf]);
        p(['-6', 'addr', 'add', `${ip6}/128`, 'dev', 'eth0', 'nodad']);
        p(['-6', 'route', 'add', 'default', 'via', GW6, 'dev', 'eth0']);
      }
      const j = JSON.parse(sh('ip', ['-j', '-n', nodeNs, 'link', 'show', hostIf])) as { ifindex: number }[];
      const pj = JSON.parse(sh('ip', ['-j', '-n', ns, 'link', 'show', 'eth0'])) as { address: string }[];
      pods.push({ name: `p${i}`, ns, ip, hostIf, ifindex: j[0]!.ifindex, id: 100 + i, mac: pj[0]!.address, ...(ip6 ? { ip6 } : {}) });
    }
    return { tag, nodeNs, pods, destroy };
  } catch (e) {
    destroy();
    throw e;
  }
}

export interface World { ns: string; ifname: string; ip: string; mac: string; nodeMac: string; ip6?: string; destroy(): void }

/**
 * An "outside" namespace behind the node: veth `ifname` in the node namespace (where
 * from_network attaches), eth0 with `ip` on the other side, routed both ways.
 */
export function createWorld(topo: Topo, ip = '10.250.9.2', ip6?: string): World {
  const ns = `mdp-${topo.tag}-w`;
  const ifname = `mdpw${topo.tag.slice(0, 6)}`;
  const destroy = () => {
    sh('ip', ['netns', 'del', ns], { allowFail: true });
    sh('ip', ['-n', topo.nodeNs, 'link', 'del', ifname], { allowFail: true });
  };
  try {
    sh('ip', ['netns', 'add', ns]);
    if (ip6) ipv6In(ns, true);
    sh('ip', ['-n', topo.nodeNs, 'link', 'add', ifname, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    sh('ip', ['-n', topo.nodeNs, 'link', 'set', ifname, 'up']);
    sh('ip', ['-n', topo.nodeNs, 'route', 'add', `${ip}/32`, 'dev', ifname]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', `${ip}/32`, 'dev', 'eth0']);
    sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', GW, 'dev', 'eth0', 'onlink']);
    if (ip6) {
      sh('ip', ['-n', topo.nodeNs, 'addr', 'add', `${GW6}/64`, 'dev', ifname, 'nodad']);
      sh('ip', ['-n', topo.nodeNs, '-6', 'route', 'add', `${ip6}/128`, 'dev', ifname]);
      sh('ip', ['-n', ns, '-6', 'addr', 'add', `${ip6}/128`, 'dev', 'eth0', 'nodad']);
      sh('ip', ['-n', ns, '-6', 'route', 'add', 'default', 'via', GW6, 'dev', 'eth0']);
    }
    const macOf = (n: string, dev: string) => (JSON.parse(sh('ip', ['-j', '-n', n, 'link', 'show', dev])) as { address: string }[])[0]!.address;
    return { ns, ifname, ip, mac: macOf(ns, 'eth0'), nodeMac: macOf(topo.nodeNs, ifname), ...(ip6 ? { ip6 } : {}), destroy };
  } catch (e) {
    destroy();
    throw e;
  }
}

/** MAC of a pod's host-side veth (the gateway its frames go to). */
export function gatewayMac(topo: Topo, pod: Pod): string {
  return (JSON.parse(sh('ip', ['-j', '-n', topo.nodeNs, 'link', 'show', pod.hostIf])) as { address: string }[])[0]!.address;
}

/** Runs the net tool in a namespace (network only: host mounts kept). */
export function inNs(ns: string, args: string[]): string {
  return sh('nsenter', [`--net=/run/netns/${ns}`, NODE_BIN, NET_TOOL, ...args], { allowFail: false });
}

export function tcpConnect(ns: string, ip: string, port: number, timeoutMs = 600): boolean {
  const r = JSON.parse(inNs(ns, ['connect', ip, String(port), String(timeoutMs)])) as { ok: boolean };
  return r.ok;
}

export function ping(ns: string, ip: string, src?: string): boolean {
  const out = sh('nsenter', [`--net=/run/netns/${ns}`, 'ping', ...(ip.includes(':') ? ['-6'] : []), '-c1', '-W1', ...(src ? ['-I', src] : []), ip], { allowFail: true });
  return / 0% packet loss/.test(out);
}

/** Long-running helper process in a namespace; killed by its own pid. */
export function spawnInNs(ns: string, args: string[]): ChildProcess {
  return spawn('nsenter', [`--net=/run/netns/${ns}`, NODE_BIN, NET_TOOL, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
}

export function waitLine(cp: ChildProcess, re: RegExp, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => { cp.stdout?.off('data', on); reject(new Error(`timeout waiting for ${re}; got ${buf}`)); }, timeoutMs);
    const on = (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      for (const l of lines) {
        if (re.test(l)) {
          clearTimeout(t);
          cp.stdout?.off('data', on);
          resolve(l);
          return;
        }
      }
    };
    cp.stdout?.on('data', on);
  });
}

export function killProc(cp: ChildProcess | null | undefined): void {
  if (cp && cp.pid && cp.exitCode === null) {
    try {
      process.kill(cp.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

export function netnsGone(tag: string): boolean {
  return !existsSync(`/run/netns/mdp-${tag}-node`);
}
