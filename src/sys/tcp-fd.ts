/**
 * Non-blocking TCP sockets as bare fds (koffi → libc), for a TLS leg (tls-leg.ts) that drives its
 * fd itself rather than through a Node socket: listen and accept on loopback, connect.
 */
import koffi from 'koffi';
import { errnoName } from './errno.ts';
import { constants as osConstants } from 'node:os';
import { MembraneError } from '../common/errors.ts';

const c = koffi.load('libc.so.6');
const socketFn = c.func('int socket(int domain, int type, int protocol)') as (d: number, t: number, p: number) => number;
const setsockopt = c.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)') as (fd: number, l: number, o: number, v: Buffer, n: number) => number;
const getsockoptFn = c.func('int getsockopt(int fd, int level, int optname, _Inout_ void *optval, _Inout_ uint32_t *optlen)') as (fd: number, l: number, o: number, v: Buffer, n: number[]) => number;
const bindFn = c.func('int bind(int fd, const void *addr, uint32_t addrlen)') as (fd: number, a: Buffer, n: number) => number;
const listenFn = c.func('int listen(int fd, int backlog)') as (fd: number, b: number) => number;
const accept4 = c.func('int accept4(int fd, void *addr, void *addrlen, int flags)') as (fd: number, a: null, n: null, f: number) => number;
const connectFn = c.func('int connect(int fd, const void *addr, uint32_t addrlen)') as (fd: number, a: Buffer, n: number) => number;
const getsockname = c.func('int getsockname(int fd, _Inout_ void *addr, _Inout_ uint32_t *len)') as (fd: number, a: Buffer, n: number[]) => number;
const closeFn = c.func('int close(int fd)') as (fd: number) => number;
const fcntl = c.func('int fcntl(int fd, int cmd, int arg)') as (fd: number, cmd: number, arg: number) => number;
const recvFn = c.func('long recv(int fd, _Out_ void *buf, size_t len, int flags)') as (fd: number, b: Buffer, n: number, f: number) => number;

const AF_INET = 2, SOCK_STREAM = 1, SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1, SO_REUSEADDR = 2, SO_ERROR = 4, IPPROTO_TCP = 6, TCP_NODELAY = 1;
const EINPROGRESS = 115;
const F_DUPFD_CLOEXEC = 1030;
const MSG_PEEK = 2, MSG_DONTWAIT = 0x40;
const SO_RCVLOWAT = 18, SO_LINGER = 13;
const EAGAIN = 11, EINTR = 4;
/** SO_LINGER on, 0 s: close() sends a reset */
const LINGER_RESET = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);
const ONE = Buffer.from([1, 0, 0, 0]);

function loopback(port: number): Buffer {
  const a = Buffer.alloc(16);
  a.writeUInt16LE(AF_INET, 0);
  a.writeUInt16BE(port, 2);
  a.set([127, 0, 0, 1], 4);
  return a;
}

function fail(fd: number, what: string): never {
  const errno = koffi.errno();
  if (fd >= 0) closeFn(fd);
  throw new MembraneError('SOCK_TCP', `${what}: errno ${errno}`);
}

/** a listening non-blocking socket on 127.0.0.1 (`port` 0: the kernel's choice) and its port */
export function listenLoopback(port = 0, backlog = 1024): { fd: number; port: number } {
  const fd = socketFn(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(-1, 'socket');
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, ONE, 4);
  if (bindFn(fd, loopback(port), 16) !== 0) fail(fd, `bind 127.0.0.1:${port}`);
  if (listenFn(fd, backlog) !== 0) fail(fd, 'listen');
  const a = Buffer.alloc(16);
  if (getsockname(fd, a, [16]) !== 0) fail(fd, 'getsockname');
  return { fd, port: a.readUInt16BE(2) };
}

/** an accepted connection (non-blocking, TCP_NODELAY), or -1: none waiting (EAGAIN) or an error */
export function acceptFd(lfd: number): number {
  const fd = accept4(lfd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ONE, 4);
  return fd;
}

/** a non-blocking connect to 127.0.0.1:`port` under way (or done): its fd */
export function connectLoopback(port: number): number {
  const fd = socketFn(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(-1, 'socket');
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ONE, 4);
  if (connectFn(fd, loopback(port), 16) !== 0 && koffi.errno() !== EINPROGRESS) fail(fd, `connect 127.0.0.1:${port}`);
  return fd;
}

const inetPton = c.func('int inet_pton(int af, const char *src, void *dst)') as (af: number, src: string, dst: Buffer) => number;
const AF_INET6 = 10;

/** struct sockaddr_in / sockaddr_in6 of `ip`:`port`, null when `ip` is no address */
function sockaddr(ip: string, port: number): Buffer | null {
  const v6 = ip.includes(':');
  const sa = Buffer.alloc(v6 ? 28 : 16);
  sa.writeUInt16LE(v6 ? AF_INET6 : AF_INET, 0);
  sa.writeUInt16BE(port, 2);
  return inetPton(v6 ? AF_INET6 : AF_INET, ip, sa.subarray(v6 ? 8 : 4)) === 1 ? sa : null;
}

/** a connect that failed at once: its errno and why */
export interface ConnectFailure { fd: -1; errno: number; message: string }

/**
 * A non-blocking connect to `ip`:`port` (IPv4 or IPv6) under way or done, on `fd` when given (a
 * socket of the address's family: e.g. a transparent one, proxy-socket.ts) or on a new one
 * (TCP_NODELAY). Its fd, or the failure as a value when connect(2) refused at once (ENETUNREACH,
 * EADDRNOTAVAIL, …; the fd, given or made, then closed). A refusal by the peer (ECONNREFUSED)
 * comes later, as the socket's SO_ERROR once it is writable (a client TLS leg's TLS_CONNECT_FAILED).
 */
export function connectTcp(ip: string, port: number, fd = -1): { fd: number; errno?: undefined } | ConnectFailure {
  const sa = sockaddr(ip, port);
  if (!sa) {
    if (fd >= 0) closeFn(fd);
    return { fd: -1, errno: 22, message: `connect: ${JSON.stringify(ip)} is no IPv4 or IPv6 address` };
  }
  if (fd < 0) {
    fd = socketFn(sa.length === 28 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { const errno = koffi.errno(); return { fd: -1, errno, message: `socket: ${errnoName(errno)}` }; }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ONE, 4);
  }
  if (connectFn(fd, sa, sa.length) !== 0) {
    const errno = koffi.errno();
    if (errno !== EINPROGRESS) {
      closeFn(fd);
      return { fd: -1, errno, message: `connect ${ip}:${port}: ${errnoName(errno)}` };
    }
  }
  return { fd };
}

/** the socket's pending error (SO_ERROR, taken off it): 0 when none */
export function socketError(fd: number): number {
  const v = Buffer.alloc(4);
  if (getsockoptFn(fd, SOL_SOCKET, SO_ERROR, v, [4]) !== 0) return koffi.errno();
  return v.readInt32LE(0);
}

export function closeTcpFd(fd: number): void {
  if (fd >= 0) closeFn(fd);
}

/**
 * A second fd of the same socket (close-on-exec), or -1 (errno): the socket stays open until both
 * are closed, so the first can be closed by its owner (Node's handle) while this one goes on.
 */
export function dupFd(fd: number): number {
  return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

/**
 * The bytes waiting on `fd` copied into `buf` without taking them (MSG_PEEK): their count, 0 at the
 * peer's end with nothing waiting, -1 when none wait yet (EAGAIN), -errno on an error.
 */
export function peekFd(fd: number, buf: Buffer): number {
  for (;;) {
    const n = Number(recvFn(fd, buf, buf.length, MSG_PEEK | MSG_DONTWAIT));
    if (n >= 0) return n;
    const e = koffi.errno();
    if (e === EINTR) continue;
    return e === EAGAIN ? -1 : -e;
  }
}

/**
 * The fd is readable only once `n` bytes wait (SO_RCVLOWAT; the peer's end and errors still wake
 * it): a reader that peeks and needs more is not woken again for the bytes it has seen.
 */
export function setRcvLowat(fd: number, n: number): boolean {
  const v = Buffer.alloc(4);
  v.writeInt32LE(n, 0);
  return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, v, 4) === 0;
}

/** closing `fd` will send a TCP reset, not a FIN (SO_LINGER 0 s) */
export function resetOnClose(fd: number): void {
  setsockopt(fd, SOL_SOCKET, SO_LINGER, LINGER_RESET, 8);
}
