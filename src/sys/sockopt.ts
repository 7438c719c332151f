/**
 * Socket options the datapath's proxy steering needs (koffi → libc): IP_TRANSPARENT on a
 * listener so that bpf_sk_assign'ed connections to non-local addresses can complete.
 */
import koffi from 'koffi';
import { MembraneError } from '../errors.ts';

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
