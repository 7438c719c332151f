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
