/**
 * skb marks shared by the L7 proxies and the datapath (Cilium's MARK_MAGIC_* layout,
 * bpf/lib/common.h): the magic lives in bits 8..11 (mask 0x0F00), the source security identity
 * in bits 16..31 (low 16 bits of the identity) and 0..7 (bits 16..23 of the identity).
 *
 *   0x0200 TO_PROXY        set by the datapath on packets it steers to a proxy listener
 *                          (`ip rule fwmark 0x200/0xf00 lookup 2004`, local route in 2004)
 *   0x0A00 PROXY_INGRESS   upstream packets of the ingress proxy: the request was already
 *                          enforced at L7 for the destination; the datapath must not steer
 *                          them to a proxy again
 *   0x0B00 PROXY_EGRESS    upstream packets of the egress proxy: the source identity is in the
 *                          mark (and the source address is the pod's own); the destination's
 *                          ingress policy applies to them as to the pod's own packets
 *
 * The upstream sockets are bound, with IP_TRANSPARENT, to the client pod's address: replies to
 * them must be delivered locally (a `socket transparent` match setting 0x200, or the datapath
 * marking the replies of connections it saw leaving with PROXY_* marks).
 */
export const MARK_MAGIC_HOST_MASK = 0x0f00;
export const MARK_MAGIC_TO_PROXY = 0x0200;
export const MARK_MAGIC_PROXY_INGRESS = 0x0a00;
export const MARK_MAGIC_PROXY_EGRESS = 0x0b00;

/** The SO_MARK of an upstream socket: magic + source identity (Cilium's encoding). */
export function proxyUpstreamMark(direction: 'ingress' | 'egress', identity: number): number {
  const magic = direction === 'ingress' ? MARK_MAGIC_PROXY_INGRESS : MARK_MAGIC_PROXY_EGRESS;
  return (((identity & 0xffff) << 16) | magic | ((identity >>> 16) & 0xff)) >>> 0;
}

/** The identity carried in a proxy mark (0 if the mark is not a proxy mark). */
export function identityFromMark(mark: number): number {
  const magic = mark & MARK_MAGIC_HOST_MASK;
  if (magic !== MARK_MAGIC_PROXY_INGRESS && magic !== MARK_MAGIC_PROXY_EGRESS) return 0;
  return ((mark >>> 16) & 0xffff) | ((mark & 0xff) << 16);
}
