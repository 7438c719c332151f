/**
 * WireGuard devices, one interface over two implementations:
 *
 *   kernel     ── `ip link add <dev> type wireguard` works (the module is loaded): `wg` talks netlink
 *   userspace  ── otherwise Debian's wireguard-go makes a TUN device and serves the same
 *                 configuration protocol on a unix socket; `wg` finds it in /run/wireguard
 *
 * wireguard-go hard-codes /run/wireguard/<dev>.sock, and every lab node calls its device
 * cilium_wg0, so each node's wireguard-go (and each `wg` run for it) gets a private mount
 * namespace in which the node's own socket directory is bound over /run/wireguard: nodes never
 * see each other's sockets, and nothing is mounted in the host's namespace.
 *
 * The private key only ever travels as a file path (`wg set private-key FILE`); `wg show dump`
 * prints it, so `show` drops that field before anything else sees the output.
 */
import { generateKeyPairSync, createPublicKey, createPrivateKey } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { isAlive, killPids, readPidFile, run, spawnDetached } from './proc.ts';
import { MembraneError } from '../common/errors.ts';
import { childEnv } from '../common/config.ts';
import { setPeerSocketBuffers } from './sockopt.ts';
import { linkPresentSelf } from './net.ts';
import { openNapiTun, setGroFlushTimeout } from './tun.ts';

export interface WireguardPeer {
  publicKey: string;
  /** `ip:port` of the peer's UDP socket */
  endpoint: string;
  allowedIps: string[];
}

export interface WireguardState {
  publicKey: string;
  listenPort: number;
  peers: { publicKey: string; endpoint: string; allowedIps: string[]; latestHandshake: number; rxBytes: number; txBytes: number }[];
}

/** X25519 key pair in WireGuard's base64 (32 raw bytes each). */
export function generateKeyPair(): { privateKey: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const priv = privateKey.export({ format: 'jwk' }) as { d: string };
  const pub = publicKey.export({ format: 'jwk' }) as { x: string };
  return { privateKey: Buffer.from(priv.d, 'base64url').toString('base64'), publicKey: Buffer.from(pub.x, 'base64url').toString('base64') };
}

/** The public key of a base64 private key (what `wg pubkey` prints). */
export function publicKeyOf(privateKeyB64: string): string {
  const d = Buffer.from(privateKeyB64.trim(), 'base64');
  if (d.length !== 32) throw new MembraneError('WG_BAD_KEY', 'a WireGuard private key is 32 bytes in base64', { hint: 'delete the key file; the agent makes a new pair' });
  const priv = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: d.toString('base64url'), x: '' }, format: 'jwk' });
  const pub = createPublicKey(priv).export({ format: 'jwk' }) as { x: string };
  return Buffer.from(pub.x, 'base64url').toString('base64');
}

/** Well-formed WireGuard public key (base64 of 32 bytes). */
export function isWireguardKey(s: unknown): s is string {
  return typeof s === 'string' && /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(s);
}

/** what wireguard-go sizes its own UDP sockets to since 0.0.20230223 (conn.socketBufferSize) */
export const WG_SOCKET_BUFFER = 7 << 20;

/**
 * Transmit ring of wireguard-go's TUN (its txqueuelen; wireguard-go leaves the tun driver's 500).
 * The tun driver never stops its queue: a packet routed into a full ring is dropped (the TUN's
 * tx_dropped), which a TCP stream through the tunnel pays as a retransmission and a halved
 * window. With 500, a pod's stream through cilium_wg0 lost 255-899 packets per 4 s round on this
 * 2-core machine; with 1000, none (and less wireguard-go CPU per MiB: no retransmitted data).
 */
export const WG_TUN_TXQUEUELEN = 1000;

/**
 * GRO flush timeout (ns) of wireguard-go's TUN when the agent opens it with a NAPI context
 * (src/sys/tun.ts). wireguard-go 0.0.20220316 writes one decrypted packet per syscall, and the tun
 * driver hands each to the stack alone: a pod receiving a stream saw every 1448-byte segment on
 * its own and acknowledged about every second one, and each ACK costs wireguard-go ~35 µs on the
 * way back. Through NAPI, GRO holds a flow's segments until a PSH, a full 64 KiB or this long
 * after the last poll, so the receiver gets them as one skb and acknowledges once. Segments with
 * PSH, SYN, FIN or RST and pure ACKs are never held (request/response traffic waits for nothing).
 * Measured on a bare wireguard-go pair (2-core machine, 3 s streams): ACKs back per MiB 89-119
 * without a timeout, 49-68 with 20 µs, 20-23 with 100 µs. Through membrane's pods
 * (bench/encryption, 2 rounds each, i-wg10): native routing 50 µs 33, 100 µs 28, 200 µs 24 ACKs
 * per MiB; tunnel routing 33, 27-31, 26; the stream's ratio to bare within the runs' spread
 * (native 0.87-0.90, tunnel 0.80-0.92) at all three: 100 µs kept.
 */
export const WG_TUN_GRO_FLUSH_NS = 100_000;

/** The fds, in process `pid`, of its UDP sockets (IPv4 and IPv6) bound to `port`, with their inodes. */
export function udpSockets(pid: number, port: number): { fd: number; inode: string }[] {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of ['udp', 'udp6']) {
    let text = '';
    try { text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
      if (f.length > 9 && f[1]!.endsWith(`:${hexPort}`)) inodes.add(f[9]!);
    }
  }
  const fds: { fd: number; inode: string }[] = [];
  if (!inodes.size) return fds;
  let entries: string[] = [];
  try { entries = readdirSync(`/proc/${pid}/fd`); } catch { return fds; }
  for (const fd of entries) {
    let target = '';
    try { target = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m && inodes.has(m[1]!)) fds.push({ fd: Number(fd), inode: m[1]! });
  }
  return fds;
}

/**
 * Gives wireguard-go's UDP sockets on `port` WG_SOCKET_BUFFER bytes each way, as newer releases
 * do for themselves: with the 208 KiB default the receiving side's socket overflows under a TCP
 * stream (UDP RcvbufErrors), each loss costs a retransmission and the stream backs off. Returns
 * how many sockets it sized (0: none bound yet).
 */
export function sizeWireguardGoSockets(pid: number, port: number, bytes = WG_SOCKET_BUFFER): number {
  const fds = udpSockets(pid, port).map((x) => x.fd);
  if (fds.length) setPeerSocketBuffers(pid, fds, bytes);
  return fds.length;
}

const WG_HINT = 'install wireguard-tools and wireguard-go (Debian: apt-get install wireguard-tools wireguard-go; scripts/setup.sh does)';

export interface WireguardDeviceOptions {
  ifname: string;
  /** this node's directory for wireguard-go's socket, pid file and log */
  dir: string;
  /** userspace: the agent opens the TUN with a NAPI context and this GRO flush timeout (ns) and
   *  hands it to wireguard-go; 0 or absent: wireguard-go makes its own (no NAPI, no GRO) */
  groFlushTimeoutNs?: number;
}

export interface WireguardDevice {
  readonly ifname: string;
  kind(): 'kernel' | 'userspace' | undefined;
  /** Creates the device (or adopts a running one); returns true when it had to (re)create it. */
  ensure(): Promise<boolean>;
  /** Is the device there and, in userspace, its process alive? */
  up(): Promise<boolean>;
  /** Private key (a file), port and exactly these peers (others are removed). */
  configure(c: { privateKeyFile: string; listenPort: number; peers: WireguardPeer[]; fwmark?: number }): Promise<void>;
  show(): Promise<WireguardState | undefined>;
  /** pid of wireguard-go (userspace only) */
  pid(): number | undefined;
  /** Userspace: sizes wireguard-go's UDP sockets on `port` (sizeWireguardGoSockets); the count sized. */
  sizeSockets(port: number): number;
  /** Stops wireguard-go / deletes the kernel device. */
  remove(): Promise<void>;
}

export function createWireguardDevice(o: WireguardDeviceOptions): WireguardDevice {
  const { ifname, dir } = o;
  const sockDir = join(dir, 'run');
  const pidFile = join(dir, 'wireguard-go.pid');
  let mode: 'kernel' | 'userspace' | undefined;

  const alive = () => isAlive(readPidFile(pidFile), 'wireguard-go', '/proc/self/ns/net');
  /** procfs, not `ip link show`: up() runs every second, and a fork of the agent costs milliseconds */
  async function linkExists(): Promise<boolean> {
    return linkPresentSelf(ifname);
  }
  /** 'wireguard' (kernel), 'tun' (wireguard-go's), another kind, or undefined: no such device */
  async function linkKind(): Promise<string | undefined> {
    const r = await run('ip', ['-j', '-d', 'link', 'show', 'dev', ifname]);
    if (r.code !== 0) return undefined;
    try {
      const l = (JSON.parse(r.stdout) as { linkinfo?: { info_kind?: string } }[])[0];
      return l?.linkinfo?.info_kind ?? 'none';
    } catch { return 'none'; }
  }
  /** `wg ARGS` against this node's device (in userspace: in a mount namespace seeing only its socket). */
  async function wg(args: string[]): Promise<string> {
    const r = mode === 'userspace'
      ? await run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /run/wireguard && exec wg "$@"', sockDir, ...args])
      : await run('wg', args);
    if (r.code !== 0) {
      throw new MembraneError('WG_COMMAND_FAILED', `wg ${args[0] ?? ''} ${ifname}: exit ${r.code}: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`, { hint: WG_HINT });
    }
    return r.stdout;
  }

  async function startUserspace(): Promise<void> {
    mkdirSync(sockDir, { recursive: true, mode: 0o700 });
    mkdirSync('/run/wireguard', { recursive: true, mode: 0o700 });
    // the device, with NAPI, made here and handed over as fd 3 (wireguard-go's WG_TUN_FD)
    const gro = o.groFlushTimeoutNs ?? 0;
    const tunFd = gro > 0 ? openNapiTun(ifname) : undefined;
    try {
      if (tunFd !== undefined) await setGroFlushTimeout(ifname, gro);
      spawnDetached({
        argv: ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /run/wireguard && exec wireguard-go -f "$1"', sockDir, ifname],
        logFile: join(dir, 'wireguard-go.log'), pidFile,
        env: childEnv({ inherit: false, extra: { WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: 'error', ...(tunFd !== undefined ? { WG_TUN_FD: '3' } : {}) } }),
        ...(tunFd !== undefined ? { fds: [tunFd] } : {}),
      });
    } finally {
      // wireguard-go holds its own copy; the device goes when it exits
      if (tunFd !== undefined) closeSync(tunFd);
    }
    const deadline = Date.now() + 10_000;
    while (!(existsSync(join(sockDir, `${ifname}.sock`)) && (await linkExists()))) {
      if (Date.now() > deadline) {
        throw new MembraneError('WG_START_FAILED', `wireguard-go did not create ${ifname} within 10 s`, { hint: `see ${join(dir, 'wireguard-go.log')}; ${WG_HINT}` });
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  return {
    ifname,
    kind: () => mode,
    async ensure() {
      const kindNow = await linkKind();
      if (kindNow === 'wireguard') { mode = 'kernel'; return false; }
      if (kindNow !== undefined && alive()) { mode = 'userspace'; return false; }
      if (mode !== 'userspace' && kindNow === undefined) {
        const r = await run('ip', ['link', 'add', 'dev', ifname, 'type', 'wireguard']);
        if (r.code === 0) { mode = 'kernel'; return true; }
      }
      // no kernel module: wireguard-go (a dead one's process and stale device go first)
      mode = 'userspace';
      const old = readPidFile(pidFile);
      if (old && isAlive(old, 'wireguard-go')) await killPids([old], { timeoutMs: 2000 });
      if (kindNow !== undefined) await run('ip', ['link', 'delete', 'dev', ifname]);
      await startUserspace();
      return true;
    },
    async up() {
      if (!(await linkExists())) return false;
      return mode === 'kernel' || alive();
    },
    async configure(c) {
      const args = ['set', ifname, 'private-key', c.privateKeyFile, 'listen-port', String(c.listenPort), 'fwmark', c.fwmark ? `0x${c.fwmark.toString(16)}` : 'off'];
      const want = new Set(c.peers.map((p) => p.publicKey));
      const have = await this.show();
      for (const p of have?.peers ?? []) if (!want.has(p.publicKey)) args.push('peer', p.publicKey, 'remove');
      for (const p of c.peers) args.push('peer', p.publicKey, 'endpoint', p.endpoint, 'allowed-ips', p.allowedIps.join(','));
      await wg(args);
    },
    async show() {
      if (!(await linkExists())) return undefined;
      const lines = (await wg(['show', ifname, 'dump'])).split('\n').filter(Boolean);
      const head = lines.shift()?.split('\t');
      if (!head || head.length < 3) return undefined;
      // head[0] is the private key: dropped here
      return {
        publicKey: head[1] ?? '', listenPort: Number(head[2]),
        peers: lines.map((l) => {
          const f = l.split('\t');
          return {
            publicKey: f[0] ?? '', endpoint: f[2] === '(none)' ? '' : f[2] ?? '', allowedIps: !f[3] || f[3] === '(none)' ? [] : f[3].split(','),
            latestHandshake: Number(f[4] ?? 0), rxBytes: Number(f[5] ?? 0), txBytes: Number(f[6] ?? 0),
          };
        }),
      };
    },
    pid: () => (mode === 'userspace' ? readPidFile(pidFile) : undefined),
    sizeSockets(port) {
      const p = mode === 'userspace' ? readPidFile(pidFile) : undefined;
      return p ? sizeWireguardGoSockets(p, port) : 0;
    },
    async remove() {
      const p = readPidFile(pidFile);
      if (p && isAlive(p, 'wireguard-go')) await killPids([p], { timeoutMs: 2000 });
      if (await linkExists()) await run('ip', ['link', 'delete', 'dev', ifname]);
    },
  };
}
