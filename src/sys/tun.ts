/**
 * TUN devices the agent opens itself and hands to a userspace program (wireguard-go takes one by
 * fd in WG_TUN_FD), so that the device gets what its program would not ask for: IFF_NAPI, a NAPI
 * context on the receive side. Without it the tun driver hands every packet its program writes
 * straight to the stack (netif_receive_skb, one skb per packet, no GRO); with it the packets go
 * through napi_gro_receive, and with a GRO flush timeout on the device the segments of one TCP
 * flow that arrive within it reach the receiver as one skb, which it acknowledges once.
 */
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';
import { MembraneError } from '../common/errors.ts';
import { run } from './proc.ts';

const libc = koffi.load('libc.so.6');
const ioctl = libc.func('int ioctl(int fd, unsigned long request, ...)');

/** linux/if_tun.h */
const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001;
const IFF_NAPI = 0x0010;
/** struct ifreq: 16 bytes of name, then the union (ifr_flags a short) */
const IFREQ_SIZE = 40;

/**
 * Opens /dev/net/tun as L3 device `ifname` in the caller's network namespace with a NAPI context
 * (IFF_TUN | IFF_NAPI), packet information on as wireguard-go 0.0.20220316 makes its own (its
 * CreateTUNFromFile reads the 4-byte header). The device lives while the fd (or a copy in a child)
 * is open. Returns the fd; the caller closes its copy once the program holds one.
 */
export function openNapiTun(ifname: string): number {
  if (!ifname || Buffer.byteLength(ifname) > 15) throw new MembraneError('TUN_BAD_NAME', `TUN name ${JSON.stringify(ifname)}: 1-15 bytes`);
  const fd = openSync('/dev/net/tun', 'r+');
  const ifr = Buffer.alloc(IFREQ_SIZE);
  ifr.write(ifname, 0, 'latin1');
  ifr.writeUInt16LE(IFF_TUN | IFF_NAPI, 16);
  if ((ioctl(fd, TUNSETIFF, 'void *', ifr) as number) !== 0) {
    const errno = koffi.errno();
    closeSync(fd);
    throw new MembraneError('TUN_OPEN_FAILED', `TUNSETIFF ${ifname} (IFF_TUN|IFF_NAPI): errno ${errno}`, { hint: 'needs CAP_NET_ADMIN and /dev/net/tun; EBUSY: a device of that name exists with other flags' });
  }
  return fd;
}

/**
 * Sets `dev`'s GRO flush timeout (nanoseconds; sysfs gro_flush_timeout) in the caller's network
 * namespace. sysfs shows the namespace of whoever mounted it, so the write goes through a private
 * mount namespace with a sysfs of the caller's own in place of the one there (as `ip netns exec`
 * does).
 */
export async function setGroFlushTimeout(dev: string, ns: number): Promise<void> {
  const r = await run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'umount -l /sys; mount -t sysfs sysfs /sys && echo "$0" > "/sys/class/net/$1/gro_flush_timeout"', String(Math.trunc(ns)), dev]);
  if (r.code !== 0) throw new MembraneError('TUN_GRO_TIMEOUT', `gro_flush_timeout ${ns} on ${dev}: exit ${r.code}: ${r.stderr.trim()}`, { hint: 'needs CAP_SYS_ADMIN (a mount namespace) and CAP_NET_ADMIN' });
}
