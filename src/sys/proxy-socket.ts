/**
 * Sockets for the L7 proxies' upstream side (koffi → libc): a TCP socket that is bound, with
 * IP_TRANSPARENT, to the original client's (non-local) address and carries an skb mark, so the
 * destination's datapath sees the original source pod and does not steer the packets back to
 * the proxy. The returned fd is not connected; Node wraps it (`new net.Socket({ fd })`) and
 * connects it. IP_BIND_ADDRESS_NO_PORT defers the port choice to connect(): the 4-tuple, not the
 * (address, port) pair, must be unique, so many upstream connections can share one source IP.
 */
import koffi from 'koffi';
import { isIPv6 } from 'node:net';
import { MembraneError } from '../common/errors.ts';
import { runOk, run } from './proc.ts';

const libc = koffi.load('libc.so.6');
const socketFn = libc.func('int socket(int domain, int type, int protocol)');
const setsockopt = libc.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)');
const bindFn = libc.func('int bind(int fd, const void *addr, uint32_t addrlen)');
const closeFn = libc.func('int close(int fd)');
const inetPton = libc.func('int inet_pton(int af, const char *src, void *dst)');

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOCK_NONBLOCK = 0o4000;
const SOL_SOCKET = 1;
const SO_MARK = 36;
const SOL_IP = 0;
const IP_TRANSPARENT = 19;
const IP_BIND_ADDRESS_NO_PORT = 24;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;

const one = Buffer.alloc(4);
one.writeInt32LE(1);

function fail(fd: number, what: string): never {
  const errno = koffi.errno();
  if (fd >= 0) closeFn(fd);
  throw new MembraneError('SOCK_UPSTREAM', `${what}: errno ${errno}`, { hint: 'the proxy needs CAP_NET_ADMIN (IP_TRANSPARENT, SO_MARK) and must run in the node namespace' });
}

/**
 * A non-blocking TCP socket of `sourceIp`'s family bound to it (port chosen at connect) with
 * IP_TRANSPARENT and SO_MARK = `mark` (0: no mark). Throws SOCK_UPSTREAM. (On an IPv6 socket the
 * SOL_IP options IP_TRANSPARENT and IP_BIND_ADDRESS_NO_PORT set the same socket flags as for IPv4.)
 */
export function transparentUpstreamSocket(sourceIp: string, mark: number): number {
  const v6 = isIPv6(sourceIp);
  const sa = sockaddr(sourceIp, v6);
  const fd = socketFn(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) as number;
  if (fd < 0) fail(-1, `socket(${v6 ? 'AF_INET6' : 'AF_INET'}, SOCK_STREAM)`);
  if ((setsockopt(fd, SOL_IP, IP_TRANSPARENT, one, 4) as number) !== 0) fail(fd, 'setsockopt(IP_TRANSPARENT)');
  if ((setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, one, 4) as number) !== 0) fail(fd, 'setsockopt(IP_BIND_ADDRESS_NO_PORT)');
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
  if (mark) {
    const m = Buffer.alloc(4);
    m.writeUInt32LE(mark >>> 0);
    if ((setsockopt(fd, SOL_SOCKET, SO_MARK, m, 4) as number) !== 0) fail(fd, `setsockopt(SO_MARK 0x${mark.toString(16)})`);
  }
  if ((bindFn(fd, sa, sa.length) as number) !== 0) fail(fd, `bind(${sourceIp})`);
  return fd;
}

/** struct sockaddr_in / sockaddr_in6 of an address (port 0), by libc's inet_pton. */
function sockaddr(ip: string, v6: boolean): Buffer {
  const sa = Buffer.alloc(v6 ? 28 : 16);
  sa.writeUInt16LE(v6 ? AF_INET6 : AF_INET, 0);
  const addr = sa.subarray(v6 ? 8 : 4, v6 ? 24 : 8);
  if ((inetPton(v6 ? AF_INET6 : AF_INET, ip, addr) as number) !== 1) {
    throw new MembraneError('SOCK_UPSTREAM', `source address ${ip} is neither IPv4 nor IPv6`, { hint: 'the proxy binds its upstream socket to the client\'s address' });
  }
  // an IPv4-mapped address names an IPv4 host: such a client is bound by its IPv4 address
  if (v6 && addr.readUInt32BE(0) === 0 && addr.readUInt32BE(4) === 0 && addr.readUInt32BE(8) === 0xffff) {
    throw new MembraneError('SOCK_UPSTREAM', `source address ${ip} is IPv4-mapped`, { hint: 'an IPv4 client is bound by its IPv4 address' });
  }
  return sa;
}

/** Closes an fd that was never handed to Node. */
export function closeFd(fd: number): void {
  closeFn(fd);
}

export const TRANSPARENT_REPLY_TABLE = 'membrane_proxy';

/**
 * Replies to the proxies' transparent upstream sockets are addressed to a pod's IP, which is not
 * local to the node: without help the node would forward them to the pod. The classic TPROXY
 * recipe marks packets that belong to a transparent local socket (`socket transparent 1`) with
 * 0x200 in prerouting, so the proxy routing (`fwmark 0x200/0xf00 lookup 2004`, local default
 * route) delivers them to the socket. Runs in the calling process's namespace; idempotent.
 */
export async function ensureTransparentReplyRule(): Promise<void> {
  // one inet table for both families (an older ip-family table of the same name goes)
  await run('nft', ['delete', 'table', 'ip', TRANSPARENT_REPLY_TABLE]);
  await run('nft', ['delete', 'table', 'inet', TRANSPARENT_REPLY_TABLE]);
  await runOk('nft', ['-f', '-'], {
    input: `table inet ${TRANSPARENT_REPLY_TABLE} {\n  chain prerouting {\n    type filter hook prerouting priority mangle; policy accept;\n` +
      `    meta l4proto tcp socket transparent 1 meta mark set meta mark & 0xfffff0ff | 0x200\n  }\n}\n`,
    code: 'NET_PROXY_ROUTING', hint: 'needs nftables (nft) and CAP_NET_ADMIN in the node namespace',
  });
}

export async function removeTransparentReplyRule(): Promise<void> {
  await run('nft', ['delete', 'table', 'ip', TRANSPARENT_REPLY_TABLE]);
  await run('nft', ['delete', 'table', 'inet', TRANSPARENT_REPLY_TABLE]);
}
