/**
 * Route reads over rtnetlink (koffi → libc socket/send/recv), in this process's own network
 * namespace, without starting a process: what a supervision loop that runs every second may
 * afford. Forking `ip` from the agent copies the page tables of a Node heap each time (a few
 * milliseconds of CPU per call, taken from the datapath's own processes on a small machine).
 *
 * One RTM_GETROUTE dump of IPv4 (NLM_F_DUMP): the kernel answers with RTM_NEWROUTE messages of
 * every table and NLMSG_DONE. Reads never block (MSG_DONTWAIT): the dump is queued on the socket
 * before send() returns and refilled by each recv().
 */
import { closeSync, openSync, statSync, statfsSync, writeFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import koffi from 'koffi';
import { MembraneError } from '../common/errors.ts';
import { errnoName } from './errno.ts';
import { isMac, macBytes } from '../common/mac.ts';

const libc = koffi.load('libc.so.6');
const socketFn = libc.func('int socket(int domain, int type, int protocol)');
const sendFn = libc.func('long send(int fd, const void *buf, size_t len, int flags)');
const recvFn = libc.func('long recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)');
const closeFn = libc.func('int close(int fd)');

const AF_NETLINK = 16, AF_INET = 2, SOCK_RAW = 3, SOCK_CLOEXEC = 0x80000, NETLINK_ROUTE = 0;
const RTM_NEWROUTE = 24, RTM_GETROUTE = 26, NLMSG_ERROR = 2, NLMSG_DONE = 3;
const NLM_F_REQUEST = 0x1, NLM_F_DUMP = 0x300;
const RTA_DST = 1, RTA_OIF = 4, RTA_TABLE = 15;
const MSG_DONTWAIT = 0x40;
/** nlmsghdr (16) + rtmsg (12) */
const RTMSG_END = 28;

export interface Route4 {
  table: number;
  /** `a.b.c.d/len` */
  dst: string;
  oif: number;
}

/** Every IPv4 route of every table in this process's network namespace, with its output device. */
export function routes4(): Route4[] {
  const fd = socketFn(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE) as number;
  if (fd < 0) throw new MembraneError('NETLINK_SOCKET', `socket(AF_NETLINK): errno ${koffi.errno()}`, { hint: 'rtnetlink needs a Linux kernel; the agent runs as root' });
  try {
    const req = Buffer.alloc(RTMSG_END);
    req.writeUInt32LE(RTMSG_END, 0);
    req.writeUInt16LE(RTM_GETROUTE, 4);
    req.writeUInt16LE(NLM_F_REQUEST | NLM_F_DUMP, 6);
    req.writeUInt32LE(1, 8); // seq
    req.writeUInt8(AF_INET, 16);
    if ((sendFn(fd, req, req.length, 0) as number) !== req.length) throw new MembraneError('NETLINK_SEND', `send(RTM_GETROUTE): errno ${koffi.errno()}`);
    const out: Route4[] = [];
    const buf = Buffer.alloc(64 * 1024);
    for (let reads = 0; reads < 10_000; reads++) {
      const n = Number(recvFn(fd, buf, buf.length, MSG_DONTWAIT));
      if (n <= 0) throw new MembraneError('NETLINK_RECV', `recv(RTM_GETROUTE dump): ${n < 0 ? `errno ${koffi.errno()}` : 'end of stream'} before NLMSG_DONE`);
      for (let off = 0; off + 16 <= n;) {
        const len = buf.readUInt32LE(off), type = buf.readUInt16LE(off + 4);
        if (len < 16 || off + len > n) break;
        if (type === NLMSG_DONE) return out;
        if (type === NLMSG_ERROR) throw new MembraneError('NETLINK_ERROR', `RTM_GETROUTE: error ${-buf.readInt32LE(off + 16)}`);
        if (type === RTM_NEWROUTE && buf.readUInt8(off + 16) === AF_INET) out.push(parseRoute(buf, off, len));
        off += (len + 3) & ~3;
      }
    }
    throw new MembraneError('NETLINK_RECV', 'RTM_GETROUTE dump did not end');
  } finally {
    closeFn(fd);
  }
}

function parseRoute(b: Buffer, off: number, len: number): Route4 {
  const dstLen = b.readUInt8(off + 17);
  let table = b.readUInt8(off + 20), dst = '0.0.0.0', oif = 0;
  for (let a = off + RTMSG_END; a + 4 <= off + len;) {
    const alen = b.readUInt16LE(a), atype = b.readUInt16LE(a + 2) & 0x3fff;
    if (alen < 4) break;
    if (atype === RTA_DST && alen >= 8) dst = `${b[a + 4]}.${b[a + 5]}.${b[a + 6]}.${b[a + 7]}`;
    else if (atype === RTA_OIF && alen >= 8) oif = b.readUInt32LE(a + 4);
    else if (atype === RTA_TABLE && alen >= 8) table = b.readUInt32LE(a + 4);
    a += (alen + 3) & ~3;
  }
  return { table, dst: `${dst}/${dstLen}`, oif };
}

/*
 * A container's veth over rtnetlink, in the agent's process (CNI ADD and DEL, src/cni/host-provider.ts).
 * Each `ip`/`nsenter`/`sh` the agent started for it was a fork of the Node process (its page tables
 * copied) and an exec: ~57 ms of CPU per ADD on the 2-core machine, as much as the agent's own work.
 *
 * The container's side is reached through a netlink socket opened inside its network namespace:
 * setns(2) of the calling thread (the JS thread, network namespaces only: legal in a threaded
 * process), socket(), and setns back at once, in one synchronous stretch (no JS runs in between).
 * The sysctls that must be set before the container's interface exists are written in that
 * stretch too (/proc/sys/net follows the calling thread's namespace).
 */
const setnsFn = libc.func('int setns(int fd, int nstype)');
const CLONE_NEWNET = 0x40000000;
const RTM_NEWLINK = 16, RTM_DELLINK = 17, RTM_GETLINK = 18, RTM_NEWADDR = 20, RTM_DELROUTE = 25;
const NLM_F_ACK = 0x4, NLM_F_REPLACE = 0x100, NLM_F_EXCL = 0x200, NLM_F_CREATE = 0x400;
const IFLA_ADDRESS = 1, IFLA_IFNAME = 3, IFLA_LINKINFO = 18, IFLA_NET_NS_FD = 28, IFLA_INFO_KIND = 1, IFLA_INFO_DATA = 2, VETH_INFO_PEER = 1;
const IFA_ADDRESS = 1, IFA_LOCAL = 2, RTA_GATEWAY = 5;
const IFF_UP = 1, RT_TABLE_MAIN = 254, RTPROT_BOOT = 3, RT_SCOPE_UNIVERSE = 0, RT_SCOPE_LINK = 253, RT_SCOPE_NOWHERE = 255, RTN_UNICAST = 1;
const IFNAME = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$/;


function attr(type: number, payload: Buffer): Buffer {
  const b = Buffer.alloc((4 + payload.length + 3) & ~3);
  b.writeUInt16LE(4 + payload.length, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}
const u32 = (v: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); return b; };
const cstr = (s: string): Buffer => Buffer.from(`${s}\0`, 'latin1');
function ipv4(s: string): Buffer {
  const p = s.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new MembraneError('NETLINK_BAD_ARGUMENT', `not an IPv4 address: ${s}`);
  return Buffer.from(p);
}
function mac(s: string): Buffer {
  if (!isMac(s)) throw new MembraneError('NETLINK_BAD_ARGUMENT', `not a MAC address: ${s}`);
  return macBytes(s);
}
function ifinfo(index = 0, flags = 0, change = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags, 8);
  b.writeUInt32LE(change, 12);
  return b;
}
function name(n: string): string {
  if (!IFNAME.test(n)) throw new MembraneError('NETLINK_BAD_ARGUMENT', `bad link name ${n}`, { hint: 'link names are 1-15 of [A-Za-z0-9_.-]' });
  return n;
}

/** One rtnetlink socket (of the namespace it was opened in); requests are answered before send() returns. */
class Rtnl {
  private seq = 0;
  private readonly buf = Buffer.alloc(64 * 1024);
  readonly fd: number;
  readonly where: string;
  constructor(fd: number, where: string) {
    this.fd = fd;
    this.where = where;
  }

  static open(where: string): Rtnl {
    const fd = socketFn(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE) as number;
    if (fd < 0) throw new MembraneError('NETLINK_SOCKET', `socket(AF_NETLINK) in ${where}: ${errnoName(koffi.errno())}`, { hint: 'rtnetlink needs a Linux kernel; the agent runs as root' });
    return new Rtnl(fd, where);
  }

  close(): void { closeFn(this.fd); }

  /** Sends one request; returns the errno of its answer (0: done) and the first non-error reply, if any. */
  private exchange(type: number, flags: number, body: Buffer[]): { errno: number; reply?: Buffer } {
    const payload = Buffer.concat(body);
    const hdr = Buffer.alloc(16);
    const seq = ++this.seq;
    hdr.writeUInt32LE(16 + payload.length, 0);
    hdr.writeUInt16LE(type, 4);
    hdr.writeUInt16LE(NLM_F_REQUEST | flags, 6);
    hdr.writeUInt32LE(seq, 8);
    const req = Buffer.concat([hdr, payload]);
    if ((sendFn(this.fd, req, req.length, 0) as number) !== req.length) throw new MembraneError('NETLINK_SEND', `send(${type}) in ${this.where}: ${errnoName(koffi.errno())}`);
    let reply: Buffer | undefined;
    for (let reads = 0; reads < 64; reads++) {
      const n = Number(recvFn(this.fd, this.buf, this.buf.length, MSG_DONTWAIT));
      if (n <= 0) {
        if (reply && !(flags & NLM_F_ACK)) return { errno: 0, reply };
        throw new MembraneError('NETLINK_RECV', `recv in ${this.where}: ${n < 0 ? errnoName(koffi.errno()) : 'end of stream'} before the kernel's answer`);
      }
      for (let off = 0; off + 16 <= n;) {
        const len = this.buf.readUInt32LE(off), mtype = this.buf.readUInt16LE(off + 4), mseq = this.buf.readUInt32LE(off + 8);
        if (len < 16 || off + len > n) break;
        if (mseq === seq) {
          if (mtype === NLMSG_ERROR) return { errno: -this.buf.readInt32LE(off + 16), ...(reply ? { reply } : {}) };
          reply ??= Buffer.from(this.buf.subarray(off, off + len));
          if (!(flags & NLM_F_ACK)) return { errno: 0, reply };
        }
        off += (len + 3) & ~3;
      }
    }
    throw new MembraneError('NETLINK_RECV', `no answer to request ${type} in ${this.where}`);
  }

  /** A change acknowledged by the kernel; the errnos in `ok` count as done (e.g. ENODEV for a delete). */
  change(what: string, type: number, flags: number, body: Buffer[], ok: number[] = []): void {
    const { errno } = this.exchange(type, flags | NLM_F_ACK, body);
    if (errno !== 0 && !ok.includes(errno)) throw new MembraneError('NETLINK_ERROR', `${what} in ${this.where}: ${errnoName(errno)}`, { hint: 'this needs root; is the namespace still there?' });
  }

  ifindex(link: string): number | undefined {
    const { errno, reply } = this.exchange(RTM_GETLINK, 0, [ifinfo(), attr(IFLA_IFNAME, cstr(name(link)))]);
    if (errno === osConstants.errno.ENODEV) return undefined;
    if (errno !== 0 || !reply) throw new MembraneError('NETLINK_ERROR', `RTM_GETLINK ${link} in ${this.where}: ${errnoName(errno)}`);
    return reply.readInt32LE(16 + 4);
  }

  /** The link's IFLA_ADDRESS as aa:bb:cc:dd:ee:ff (undefined: no such link, or none of 6 bytes). */
  mac(link: string): string | undefined {
    const { errno, reply } = this.exchange(RTM_GETLINK, 0, [ifinfo(), attr(IFLA_IFNAME, cstr(name(link)))]);
    if (errno === osConstants.errno.ENODEV) return undefined;
    if (errno !== 0 || !reply) throw new MembraneError('NETLINK_ERROR', `RTM_GETLINK ${link} in ${this.where}: ${errnoName(errno)}`);
    // nlmsghdr (16) + ifinfomsg (16), then the attributes
    for (let a = 32; a + 4 <= reply.length;) {
      const alen = reply.readUInt16LE(a), atype = reply.readUInt16LE(a + 2) & 0x3fff;
      if (alen < 4) break;
      if (atype === IFLA_ADDRESS) return alen === 10 ? [...reply.subarray(a + 4, a + 10)].map((b) => b.toString(16).padStart(2, '0')).join(':') : undefined;
      a += (alen + 3) & ~3;
    }
    return undefined;
  }

  up(link: string): void {
    this.change(`link set ${link} up`, RTM_NEWLINK, 0, [ifinfo(0, IFF_UP, IFF_UP), attr(IFLA_IFNAME, cstr(name(link)))]);
  }

  route(what: string, flags: number, o: { dst: string; len: number; oif: number; gateway?: string; scope: number }): void {
    const rt = Buffer.alloc(12);
    rt.writeUInt8(AF_INET, 0);
    rt.writeUInt8(o.len, 1);
    rt.writeUInt8(RT_TABLE_MAIN, 4);
    rt.writeUInt8(RTPROT_BOOT, 5);
    rt.writeUInt8(o.scope, 6);
    rt.writeUInt8(RTN_UNICAST, 7);
    const attrs = [rt, ...(o.len ? [attr(RTA_DST, ipv4(o.dst))] : []), attr(RTA_OIF, u32(o.oif)), ...(o.gateway ? [attr(RTA_GATEWAY, ipv4(o.gateway))] : [])];
    this.change(what, RTM_NEWROUTE, flags, attrs);
  }
}

/** Runs fn with the calling thread in the network namespace at path; always returns to its own. */
function inNetns<T>(path: string, fn: () => T): T {
  const own = openSync('/proc/thread-self/ns/net', 'r');
  let target: number | undefined;
  try {
    target = openSync(path, 'r');
    if ((setnsFn(target, CLONE_NEWNET) as number) !== 0) throw new MembraneError('NETLINK_SETNS', `setns(${path}): ${errnoName(koffi.errno())}`, { hint: 'is it a network namespace file? the agent runs as root' });
    try {
      return fn();
    } finally {
      if ((setnsFn(own, CLONE_NEWNET) as number) !== 0) {
        // the agent's thread would stay in a container's namespace: nothing it did after could be trusted
        process.stderr.write(`fatal: setns back to the agent's own network namespace failed (${errnoName(koffi.errno())})\n`);
        process.abort();
      }
    }
  } finally {
    if (target !== undefined) closeSync(target);
    closeSync(own);
  }
}

const NSFS_MAGIC = 0x6e736673;

/** The machine's initial network namespace (pid 1's), where it can be read. */
function initNetns(): { dev: number; ino: number } | undefined {
  try {
    return statSync('/proc/1/ns/net');
  } catch {
    return undefined;
  }
}

/**
 * Why `path` cannot be a container's network namespace (undefined: it can): it is no namespace
 * file, or it is the agent's own network namespace (the host's) or the machine's initial one. A container's namespace gets
 * sysctls (IPv6 off), an interface, addresses and a default route: in the host's own namespace
 * that would switch the host's IPv6 off and route it through the pod gateway.
 */
export function containerNetnsRefusal(path: string): string | undefined {
  try {
    if (statfsSync(path).type !== NSFS_MAGIC) return `${path} is not a network namespace file`;
    const ns = statSync(path), own = statSync('/proc/thread-self/ns/net');
    if (ns.dev === own.dev && ns.ino === own.ino) return `${path} is the agent's own network namespace (the host's)`;
    // an agent in a namespace of its own (a lab node) would otherwise take the machine's for a pod's;
    // where pid 1's namespace cannot be read (a sandbox whose pid 1 is another user namespace's),
    // no pod could name it either, and only the agent's own is compared
    const init = initNetns();
    if (init && ns.dev === init.dev && ns.ino === init.ino) return `${path} is the machine's initial network namespace`;
    return undefined;
  } catch (e) {
    return `${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
}

/** Writes sysctls under /proc/sys/net of the calling thread's namespace; a missing one (no IPv6) is skipped. */
function writeNetSysctls(values: Record<string, number>): void {
  for (const [k, v] of Object.entries(values)) {
    if (!/^net\.[A-Za-z0-9_.-]+$/.test(k) || k.includes('..')) throw new MembraneError('NETLINK_BAD_ARGUMENT', `bad sysctl ${k}`);
    try { writeFileSync(`/proc/sys/${k.replaceAll('.', '/')}`, `${v}\n`); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; }
  }
}

export interface ContainerVeth {
  /** the container's network namespace file */
  netns: string;
  /** the container's interface (its end of the veth) and its MAC */
  ifname: string;
  mac: string;
  /** the end that stays in the agent's namespace */
  hostIfname: string;
  /** the container's /32 and its gateway (default route via it) */
  ip: string;
  gateway: string;
  /** sysctls of the container's namespace, written before its interface exists (it inherits `default`) */
  sysctls: Record<string, number>;
}

/**
 * Makes a container's veth (what `ip link add … type veth peer …`, `addr add`, `route add` did):
 * the host end in this namespace (IPv6 off while down, then up, the /32 route to it), the container
 * end inside the container's namespace with the address, lo up, and a default route via the
 * gateway. Returns the host end's ifindex. On failure the host end is removed (with it the other).
 */
export function createContainerVeth(o: ContainerVeth): number {
  name(o.ifname); name(o.hostIfname);
  const refused = containerNetnsRefusal(o.netns);
  if (refused) throw new MembraneError('CNI_NETNS_INVALID', `not a container's network namespace: ${refused}`, { hint: 'CNI_NETNS names the container\'s own namespace file, e.g. /run/netns/<name>' });
  const inside = inNetns(o.netns, () => { writeNetSysctls(o.sysctls); return Rtnl.open(o.netns); });
  const here = Rtnl.open('the agent\'s namespace');
  try {
    const nsFd = openSync(o.netns, 'r');
    try {
      const peer = Buffer.concat([ifinfo(), attr(IFLA_IFNAME, cstr(o.ifname)), attr(IFLA_ADDRESS, mac(o.mac)), attr(IFLA_NET_NS_FD, u32(nsFd))]);
      const linkinfo = Buffer.concat([attr(IFLA_INFO_KIND, cstr('veth')), attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))]);
      here.change(`link add ${o.hostIfname} type veth peer ${o.ifname} in ${o.netns}`, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfo(), attr(IFLA_IFNAME, cstr(o.hostIfname)), attr(IFLA_LINKINFO, linkinfo)]);
    } finally {
      closeSync(nsFd);
    }
    try {
      const cIndex = inside.ifindex(o.ifname);
      if (!cIndex) throw new MembraneError('NETLINK_ERROR', `${o.ifname} did not appear in ${o.netns}`);
      inside.up('lo');
      const a = Buffer.alloc(8);
      a.writeUInt8(AF_INET, 0);
      a.writeUInt8(32, 1);
      a.writeUInt8(RT_SCOPE_UNIVERSE, 3);
      a.writeUInt32LE(cIndex, 4);
      inside.change(`addr add ${o.ip}/32 dev ${o.ifname}`, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, [a, attr(IFA_LOCAL, ipv4(o.ip)), attr(IFA_ADDRESS, ipv4(o.ip))]);
      inside.up(o.ifname);
      inside.route(`route add ${o.gateway} dev ${o.ifname}`, NLM_F_CREATE | NLM_F_EXCL, { dst: o.gateway, len: 32, oif: cIndex, scope: RT_SCOPE_LINK });
      inside.route(`route add default via ${o.gateway}`, NLM_F_CREATE | NLM_F_EXCL, { dst: '0.0.0.0', len: 0, oif: cIndex, gateway: o.gateway, scope: RT_SCOPE_UNIVERSE });
      // IPv6 off on the host end while it is still down (no link-local address, no chatter)
      try { writeFileSync(`/proc/sys/net/ipv6/conf/${o.hostIfname}/disable_ipv6`, '1\n'); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; }
      return hostEndUp(here, o.hostIfname, o.ip);
    } catch (e) {
      here.change(`link del ${o.hostIfname}`, RTM_DELLINK, 0, [ifinfo(), attr(IFLA_IFNAME, cstr(o.hostIfname))], [osConstants.errno.ENODEV]);
      throw e;
    }
  } finally {
    inside.close();
    here.close();
  }
}

function hostEndUp(here: Rtnl, hostIfname: string, ip: string): number {
  here.up(hostIfname);
  const index = here.ifindex(hostIfname);
  if (!index) throw new MembraneError('NETLINK_ERROR', `${hostIfname} vanished`, { hint: 'is another tool deleting links?' });
  here.route(`route replace ${ip}/32 dev ${hostIfname}`, NLM_F_CREATE | NLM_F_REPLACE, { dst: ip, len: 32, oif: index, scope: RT_SCOPE_LINK });
  return index;
}

/** The link-layer address of `link` in the agent's namespace (undefined: no such link, or not Ethernet). */
export function linkMac(link: string): string | undefined {
  const here = Rtnl.open('the agent\'s namespace');
  try {
    return here.mac(link);
  } finally {
    here.close();
  }
}

/** An existing container veth's host end: up, its /32 route in place; returns its ifindex (undefined: it is gone). */
export function containerVethHostEnd(hostIfname: string, ip: string): number | undefined {
  const here = Rtnl.open('the agent\'s namespace');
  try {
    if (!here.ifindex(name(hostIfname))) return undefined;
    return hostEndUp(here, hostIfname, ip);
  } finally {
    here.close();
  }
}

/**
 * Removes a container's veth by its host end (the container's end goes with it, and the /32 route
 * through it); the route is deleted by name too in case the link was already gone. Missing is done.
 */
export function deleteContainerVeth(hostIfname: string, ip: string): void {
  const here = Rtnl.open('the agent\'s namespace');
  try {
    here.change(`link del ${hostIfname}`, RTM_DELLINK, 0, [ifinfo(), attr(IFLA_IFNAME, cstr(name(hostIfname)))], [osConstants.errno.ENODEV]);
    // as `ip route del` asks: any protocol, type and scope (RT_SCOPE_NOWHERE)
    const rt = Buffer.alloc(12);
    rt.writeUInt8(AF_INET, 0);
    rt.writeUInt8(32, 1);
    rt.writeUInt8(RT_TABLE_MAIN, 4);
    rt.writeUInt8(RT_SCOPE_NOWHERE, 6);
    here.change(`route del ${ip}/32`, RTM_DELROUTE, 0, [rt, attr(RTA_DST, ipv4(ip))], [osConstants.errno.ESRCH, osConstants.errno.ENOENT]);
  } finally {
    here.close();
  }
}
