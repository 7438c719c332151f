/* Tunnel routing mode (Cilium's --routing-mode=tunnel, VXLAN): one VXLAN device per node in
 * external (collect-metadata) mode on UDP 8472, over the IPv4 underlay; the inner packet is a
 * pod's IPv4 or (enable-ipv6) IPv6 one, and its ipcache entry names the IPv4 node it lives on
 * (Cilium's encap of IPv6 over an IPv4 underlay). The tunnel key of every packet is set here:
 *   to_overlay (egress of the VXLAN device): the remote node's underlay address from the
 *     destination's ipcache entry (tunnel_endpoint), and the SOURCE SECURITY IDENTITY in the VNI;
 *   from_overlay (ingress): the VNI is the source identity for policy (never the ipcache), once
 *     the outer source is known to be a node and the VNI an identity a node may send.
 * Who may speak VXLAN: a pod never (DROP_ENCAP_PROHIBITED, as Cilium's policy_can_egress); an
 * address that is not a node's never (DROP_UNKNOWN_SENDER); a node's address only through the
 * underlay device (from_network drops it elsewhere as spoofed). */
#pragma once
#include "common.h"
#include "maps.h"
#include "policy.h"

#ifndef offsetof
#define offsetof(t, f) __builtin_offsetof(t, f)
#endif

#define TUNNEL_PORT 8472
#define IDENTITY_HOST 1
#define IDENTITY_REMOTE_NODE 6
#define IDENTITY_MIN_CLUSTER 256
#define VNI_MAX 0xffffff

static __always_inline int tunnel_mode(void)
{
	__u32 z = 0;
	struct dp_config *conf = bpf_map_lookup_elem(&mb_config, &z);
	return conf && (conf->flags & DP_F_TUNNEL);
}

/* A packet a pod sends to the tunnel port (any destination): only nodes encapsulate. A first
 * fragment carries the UDP header and its datagram is reassembled whole where it goes; a later
 * one has no ports of its own (its first's, which this dropped: 175). */
static __always_inline int is_encap(const struct pkt *p)
{
	return p->proto == IPPROTO_UDP && p->dport == bpf_htons(TUNNEL_PORT) && p->frag != FRAG_LATER;
}

/* `addr` is a node's tunnel endpoint: its ipcache entry is a remote node naming itself. */
static __always_inline int is_tunnel_peer(const __u8 *addr)
{
	struct ipcache_val *v = ipcache_lookup(addr);
	return v && v->identity == IDENTITY_REMOTE_NODE &&
	       __builtin_memcmp(v->tunnel_endpoint, addr, 4) == 0;
}

/* The identities a node may put in the VNI: world (traffic it forwards from outside), remote-node
 * (its host; a node never sends host, as in Cilium), and cluster-allocated identities. Reserved
 * numbers a node has no reason to send (unknown, host, unmanaged, health, init, ...) are not. */
static __always_inline int vni_identity_valid(__u32 id)
{
	return id == IDENTITY_WORLD || id == IDENTITY_REMOTE_NODE ||
	       (id >= IDENTITY_MIN_CLUSTER && id <= VNI_MAX);
}

/* The identity a packet leaving through the tunnel carries: a local endpoint's own identity, the
 * host's as remote-node, anything else (forwarded from outside) as world. Never an identity the
 * ipcache gives a remote address: a packet with a remote pod's source address arriving here did
 * not come from that pod. */
static __always_inline __u32 overlay_src_identity(const __u8 *saddr, __u8 fam)
{
	struct ipcache_val *v = ipcache_lookup_fam(saddr, fam);
	if (!v)
		return IDENTITY_WORLD;
	if (v->identity == IDENTITY_HOST)
		return IDENTITY_REMOTE_NODE;
	if (v->ep_id) {
		__u32 id = v->ep_id;
		struct ep_config *cfg = bpf_map_lookup_elem(&mb_ep_ids, &id);
		if (cfg)
			return cfg->identity;
	}
	return IDENTITY_WORLD;
}

/* Sets the tunnel key of a packet of family `fam` to `daddr`; returns 0 or a drop reason. */
static __always_inline int overlay_set_key(struct __sk_buff *skb, const __u8 *saddr, const __u8 *daddr, __u8 fam)
{
	struct ipcache_val *v = ipcache_lookup_fam(daddr, fam);
	__u32 ep = 0;
	if (v)
		__builtin_memcpy(&ep, v->tunnel_endpoint, 4);
	if (!ep)
		return DROP_NO_TUNNEL_ENDPOINT;
	struct bpf_tunnel_key key = {};
	key.tunnel_id = overlay_src_identity(saddr, fam);
	key.remote_ipv4 = bpf_ntohl(ep);
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return DROP_NO_TUNNEL_KEY;
	return 0;
}

/* The source identity of a decapsulated packet, from its VNI; returns 0 or a drop reason (the
 * identity claimed, if any, in *identity for the drop event). */
static __always_inline int overlay_src_from_key(struct __sk_buff *skb, __u32 *identity)
{
	struct bpf_tunnel_key key = {};
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return DROP_NO_TUNNEL_KEY;
	*identity = key.tunnel_id;
	__be32 remote = bpf_htonl(key.remote_ipv4);
	if (!is_tunnel_peer((const __u8 *)&remote))
		return DROP_UNKNOWN_SENDER;
	if (!vni_identity_valid(key.tunnel_id))
		return DROP_INVALID_IDENTITY;
	return 0;
}

/* The frame came from node `ep` (its underlay address, network order): its link source is the
 * MAC the node's entry publishes (mb_node_macs, written by the agent). No entry: not known to be
 * the node. */
static __always_inline int from_node_mac(struct __sk_buff *skb, __be32 ep)
{
	__u32 key = ep;
	struct node_mac *m = bpf_map_lookup_elem(&mb_node_macs, &key);
	if (!m)
		return 0;
	__u8 src[6];
	if (bpf_skb_load_bytes(skb, 6, src, 6))
		return 0;
	__u8 diff = 0;
	for (int i = 0; i < 6; i++)
		diff |= src[i] ^ m->mac[i];
	return diff == 0;
}

/* A packet from another node's address on a device that is not the underlay is spoofed. So is a
 * packet, on any network device, claiming a remote pod's (or remote node's pod-network) address,
 * IPv4 or IPv6, unless it arrives on the underlay from the node that owns it: its link source is
 * that node's (routing mode native, and a remote pod's traffic node1 forwards to the world). The
 * tunnel is not such a device: a decapsulated packet's identity is the VNI (from_overlay). */
static __always_inline int net_source_spoofed(struct __sk_buff *skb, const struct pkt *p, const struct ipcache_val *v)
{
#ifdef MB_L3_DEVICE
	/* cilium_wg0: WireGuard took the packet from the peer whose allowed IPs hold its source (a
	 * remote pod's address comes only from its node), and there is no link header to check. A
	 * node's own address passes only where the agent marks the device as underlay (tunnel mode:
	 * the decrypted VXLAN). `v` is the source's entry: it names a node's own address as
	 * is_tunnel_peer reads it, so anything else passes without a second ipcache lookup or the
	 * device's (every decrypted packet comes here) */
	if (p->family != 4 || !v || v->identity != IDENTITY_REMOTE_NODE ||
	    __builtin_memcmp(v->tunnel_endpoint, p->saddr, 4) != 0)
		return 0;
#endif
	__u32 ifindex = skb->ifindex;
	struct dev_config *d = bpf_map_lookup_elem(&mb_devices, &ifindex);
	const int underlay = d && (d->flags & DEV_F_UNDERLAY);
#ifdef MB_L3_DEVICE
	return !underlay;
#endif
	__be32 ep = 0;
	if (v)
		__builtin_memcpy(&ep, v->tunnel_endpoint, 4);
	if (!ep || v->ep_id)
		return 0;
	/* a node's own InternalIP: on the underlay only (nodes are IPv4 peers) */
	if (p->family == 4 && v->identity == IDENTITY_REMOTE_NODE && __builtin_memcmp(p->saddr, &ep, 4) == 0)
		return !underlay;
	return !underlay || !from_node_mac(skb, ep);
}

/* ---- the node's IP forwarding, skipped (as Cilium's encap_and_redirect_lxc and local delivery):
 * a judged packet goes to the device the node routes it to, found by lookup (the ipcache's tunnel
 * endpoint, the endpoint map), never by a FIB lookup per packet, with the TTL the forwarding would
 * leave it, straight to the device's egress, where its programs still run. Anything else (a TTL
 * expiring, a frame too big for the device) takes the stack's path, which answers with the ICMP
 * error. */

static __always_inline __u32 overlay_ifindex(void)
{
	__u32 z = 0;
	struct dp_config *conf = bpf_map_lookup_elem(&mb_config, &z);
	return conf && (conf->flags & DP_F_TUNNEL) ? conf->overlay_ifindex : 0;
}

/* The smallest MTU a veth or a VXLAN device takes (the kernel's ETH_MIN_MTU, their min_mtu). */
#define MB_MIN_MTU 68

/* bpf_check_mtu(skb, ifindex) for the veth or VXLAN device `ifindex` (Ethernet, hard_header_len
 * ETH_HLEN): the helper passes a frame of skb->len <= mtu + 14, a GSO one whatever its length, and
 * fails with no such device. A frame no longer than ETH_HLEN + 68 fits every MTU such a device
 * can have: decided without the helper, whose device lookup (dev_get_by_index_rcu) is ~5 % of
 * from_container; a new connection's and a request/response's segments are all this small. A
 * device gone takes its routes with it: the stack's path the helper's failure chose delivers such
 * a frame nowhere either. */
static __always_inline int fits_mtu(struct __sk_buff *skb, __u32 ifindex)
{
	if (skb->len <= ETH_HLEN + MB_MIN_MTU)
		return 1;
	__u32 mtu = 0;
	return bpf_check_mtu(skb, ifindex, &mtu, 0, 0) == BPF_MTU_CHK_RET_SUCCESS;
}

/* The IPv4 header's TTL decremented and its checksum updated in place, on `b`: the header's bytes
 * 8-11 (ttl, protocol, checksum), as in the packet. RFC 1624's incremental update (eqn. 3: HC' =
 * ~(~HC + ~m + m'), m the 16-bit word (ttl, protocol)), what the kernel's csum_replace2 computes:
 * the header still sums to 0xffff, so a CHECKSUM_COMPLETE skb's sum stays valid. The caller checked
 * the TTL is above 1. */
static __always_inline void ipv4_ttl_csum_dec(__u8 *b)
{
	const __u32 m = ((__u32)b[0] << 8) | b[1];
	__u32 sum = (~(((__u32)b[2] << 8) | b[3]) & 0xffff) + (~m & 0xffff) + (m - 0x100);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	b[0] -= 1;
	b[2] = (__u8)(~sum >> 8);
	b[3] = (__u8)~sum;
}

/* The forwarding's TTL decrement (Cilium's ipv4_dec_ttl); -1 when the TTL would expire here. One
 * load and one store of the header's bytes 8-11 (no bpf_l3_csum_replace: each helper that writes
 * makes the skb's head writable again, checks and all). */
static __always_inline int ipv4_dec_ttl(struct __sk_buff *skb)
{
	const __u32 off = ETH_HLEN + offsetof(struct iphdr, ttl);
	__u8 b[4];
	if (bpf_skb_load_bytes(skb, off, b, 4) || b[0] <= 1)
		return -1;
	ipv4_ttl_csum_dec(b);
	return bpf_skb_store_bytes(skb, off, b, 4, 0) ? -1 : 0;
}

/* The tunnel endpoint (network order) of a pod's IPv4 packet for a destination behind the tunnel,
 * 0 for any other packet. As Cilium's encap_and_redirect_lxc: the ipcache names the node, no FIB
 * lookup (in routing mode tunnel the agent routes every remote pod CIDR into the VXLAN device; a
 * node's own address names itself and is reached on the underlay, so it is not behind the tunnel).
 * A frame too big for the VXLAN device takes the stack's path, which answers it. */
static __always_inline __be32 overlay_tx_peer(struct __sk_buff *skb, const struct pkt *p, __u32 ov)
{
	if (!ov || p->family != 4)
		return 0;
	struct ipcache_val *v = ipcache_lookup(p->daddr);
	__be32 ep = 0;
	if (v)
		__builtin_memcpy(&ep, v->tunnel_endpoint, 4);
	if (!ep || __builtin_memcmp(&ep, p->daddr, 4) == 0)
		return 0;
	if (!fits_mtu(skb, ov))
		return 0;
	return ep;
}

/* Sends a judged packet for tunnel endpoint `ep` to the VXLAN device `ov` directly, its TTL
 * already decremented as the forwarding leaves it (ipv4_dec_ttl), with a tunnel key with the
 * sender's identity (to_overlay sees the key and leaves it). */
static __always_inline int overlay_key_redirect(struct __sk_buff *skb, __be32 ep, __u32 ov, __u32 identity)
{
	struct bpf_tunnel_key key = {};
	key.tunnel_id = identity;
	key.remote_ipv4 = bpf_ntohl(ep);
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return TC_ACT_SHOT;
	stat_inc(STAT_OVERLAY_REDIRECT);
	return bpf_redirect(ov, 0);
}

/* A decapsulated packet that from_overlay let through to local endpoint veth `ifindex` but did
 * not deliver into the pod itself (a fragment: to_container keeps fragment state): straight to
 * that veth's egress (to_container enforces there, as for every packet reaching a pod), with the
 * endpoint's MAC as destination (the endpoint map, no FIB lookup; the source MAC is zero:
 * ep_config does not hold the host veth's and nobody reads it). TC_ACT_OK: the stack delivers it
 * (IPv6, a TTL about to expire, a frame too big). */
static __noinline __attribute__((unused)) int overlay_redirect_rx(struct __sk_buff *skb, __u32 ifindex)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK; /* IPv6: the stack forwards it */
	struct ep_config *cfg = bpf_map_lookup_elem(&mb_endpoints, &ifindex);
	if (!cfg || !fits_mtu(skb, ifindex) || ipv4_dec_ttl(skb))
		return TC_ACT_OK;
	__u8 macs[12] = {};
	__builtin_memcpy(macs, cfg->mac, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, 12, 0))
		return TC_ACT_SHOT;
	stat_inc(STAT_OVERLAY_REDIRECT);
	return bpf_redirect(ifindex, 0);
}
