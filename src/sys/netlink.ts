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
import koffi from 'koffi';
import { MembraneError } from '../common/errors.ts';

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
