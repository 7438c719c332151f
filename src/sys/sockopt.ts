/**
 * Socket options the datapath's proxy steering needs (koffi → libc): IP_TRANSPARENT on a
 * listener so that bpf_sk_assign'ed connections to non-local addresses can complete.
 */
import koffi from 'koffi';
import { MembraneError } from '../common/errors.ts';

const libc = koffi.load('libc.so.6');
const setsockopt = libc.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)');

const SOL_IP = 0;
const IP_TRANSPARENT = 19;

/** Sets IP_TRANSPARENT on a socket fd (e.g. `server._handle.fd` of a Node listener). Needs CAP_NET_ADMIN. */
export function setIpTransparent(fd: number, on = true): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(on ? 1 : 0);
  if ((setsockopt(fd, SOL_IP, IP_TRANSPARENT, v, 4) as number) !== 0) {
    throw new MembraneError('SOCK_TRANSPARENT', `setsockopt(IP_TRANSPARENT) on fd ${fd}: errno ${koffi.errno()}`, { hint: 'needs CAP_NET_ADMIN' });
  }
}

const SOL_SOCKET = 1;
const SO_MARK = 36;
/** Cilium's MARK_MAGIC_PROXY_INGRESS: the ingress proxy's upstream connections to local endpoints carry it (to_container skips policy for them: the proxy enforced it). */
export const MARK_PROXY_INGRESS = 0xa00;

/** Sets SO_MARK on a socket fd (e.g. the ingress proxy's upstream socket before connect). Needs CAP_NET_ADMIN. */
export function setSocketMark(fd: number, mark: number): void {
  const v = Buffer.alloc(4);
  v.writeUInt32LE(mark >>> 0);
  if ((setsockopt(fd, SOL_SOCKET, SO_MARK, v, 4) as number) !== 0) {
    throw new MembraneError('SOCK_MARK', `setsockopt(SO_MARK ${mark}) on fd ${fd}: errno ${koffi.errno()}`, { hint: 'needs CAP_NET_ADMIN' });
  }
}

const pidfdOpen = libc.func('int pidfd_open(int pid, unsigned int flags)');
const pidfdGetfd = libc.func('int pidfd_getfd(int pidfd, int targetfd, unsigned int flags)');
const close = libc.func('int close(int fd)');
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;

/**
 * Sets the send and receive buffers of another process's sockets (its fd numbers `fds`) to
 * `bytes`, past net.core.{r,w}mem_max (the FORCE options; CAP_NET_ADMIN, and ptrace access to
 * `pid` for pidfd_getfd). For a program that does not size its own sockets, such as Debian's
 * wireguard-go 0.0.20220316, whose UDP socket keeps the 208 KiB default and drops at the receiver.
 */
export function setPeerSocketBuffers(pid: number, fds: readonly number[], bytes: number): void {
  const pidfd = pidfdOpen(pid, 0) as number;
  if (pidfd < 0) throw new MembraneError('SOCK_BUFFER', `pidfd_open(${pid}): errno ${koffi.errno()}`, { hint: 'the process is gone, or the kernel is older than 5.6' });
  try {
    const v = Buffer.alloc(4);
    v.writeInt32LE(bytes);
    for (const target of fds) {
      const fd = pidfdGetfd(pidfd, target, 0) as number;
      if (fd < 0) throw new MembraneError('SOCK_BUFFER', `pidfd_getfd(pid ${pid}, fd ${target}): errno ${koffi.errno()}`, { hint: 'needs CAP_SYS_PTRACE over the process (root) and a kernel of 5.6 or later' });
      try {
        for (const opt of [SO_RCVBUFFORCE, SO_SNDBUFFORCE]) {
          if ((setsockopt(fd, SOL_SOCKET, opt, v, 4) as number) !== 0) {
            throw new MembraneError('SOCK_BUFFER', `setsockopt(${opt === SO_RCVBUFFORCE ? 'SO_RCVBUFFORCE' : 'SO_SNDBUFFORCE'} ${bytes}) on fd ${target} of pid ${pid}: errno ${koffi.errno()}`, { hint: 'needs CAP_NET_ADMIN' });
          }
        }
      } finally { close(fd); }
    }
  } finally { close(pidfd); }
}
