/* Transparent encryption's strict mode (Cilium's --enable-encryption-strict-mode with WireGuard):
 * pod traffic between two addresses of the strict CIDR that reaches a network device's egress
 * has not gone through the WireGuard device (whose packets leave as UDP between node addresses)
 * and would cross the underlay in plain text: it is dropped with Cilium's reason 195. The agent
 * (src/agent/encryption.ts) fills mb_encrypt; an absent or zero entry lets everything pass. */
#pragma once
#include "common.h"

#define DROP_UNENCRYPTED_TRAFFIC 195 /* UNENCRYPTED_TRAFFIC */

#define ENCRYPT_F_STRICT 0x01
/* Routing mode tunnel (VXLAN inside WireGuard): wg_ifindex is cilium_wg0's for from_container's
 * VXLAN encapsulation into it (wg_vxlan_redirect), never native routing's hand-off (wg_out). */
#define ENCRYPT_F_TUNNEL 0x02
/* --encryption-node: a remote node's own InternalIP is one of its peer's allowed IPs (the agent
 * routes it through cilium_wg0, table 2005), so a pod's packet for it is handed over too */
#define ENCRYPT_F_NODE 0x04
/* Strict ingress (Cilium's --enable-encryption-strict-mode-ingress) is mb_config's
 * DP_F_STRICT_INGRESS (lib/maps.h): a pod's packet from another node must arrive decrypted.
 * Tunnel routing: from_overlay drops VXLAN that did not come out of cilium_wg0
 * (MARK_MAGIC_DECRYPT). Native routing: from_network drops a packet whose source is a pod on
 * another node and whose destination is a local endpoint (WireGuard's come in on cilium_wg0,
 * never there). Reason 195, as the egress side. */

struct encrypt_config {
	__u32 flags;      /* ENCRYPT_F_* */
	__be32 strict_net; /* strict CIDR, network order */
	__be32 strict_mask;
	/* cilium_wg0's ifindex, where from_container hands a pod's packet the node routes into
	 * WireGuard (native routing), or its VXLAN (ENCRYPT_F_TUNNEL); 0: the host stack forwards it */
	__u32 wg_ifindex;
	/* this node's InternalIP (network order): the outer source of the VXLAN from_container makes
	 * for cilium_wg0 (ENCRYPT_F_TUNNEL), the address its route into cilium_wg0 names */
	__be32 node_ip;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct encrypt_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_encrypt SEC(".maps");

/* Cilium's ipcache `key` (the destination's node has a WireGuard key): the peers this node sends
 * through cilium_wg0, by InternalIP (the ipcache's tunnel endpoint, network order), each with what
 * it may carry besides its InternalIP (its pod CIDR, its allowed IPs in native routing). The agent
 * (src/agent/encryption.ts) keeps an entry exactly while wireguard-go has the peer with its key,
 * the device is up and the node's routes go through it; a peer without a key has none, so its
 * traffic takes the stack's path to the underlay, where strict mode drops it. */
struct wg_peer {
	__be32 pod_net;
	__be32 pod_mask;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, struct wg_peer);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_wg_peers SEC(".maps");

static __always_inline const struct encrypt_config *encrypt_config(void)
{
	__u32 z = 0;
	return bpf_map_lookup_elem(&mb_encrypt, &z);
}

static __always_inline int strict_enabled(void)
{
	__u32 z = 0;
	const struct encrypt_config *c = bpf_map_lookup_elem(&mb_encrypt, &z);
	return c && (c->flags & ENCRYPT_F_STRICT);
}

/* cilium_wg0's ifindex when pod traffic may be handed to it from the endpoint's program (native
 * routing; 0: no) */
static __always_inline __u32 wg_out_ifindex(void)
{
	const struct encrypt_config *c = encrypt_config();
	return c && !(c->flags & ENCRYPT_F_TUNNEL) ? c->wg_ifindex : 0;
}

/* 1 when strict mode is on and both addresses are in the strict CIDR (Cilium's strict_allow
 * refuses exactly those). */
static __always_inline int strict_unencrypted(__be32 saddr, __be32 daddr)
{
	__u32 z = 0;
	const struct encrypt_config *c = bpf_map_lookup_elem(&mb_encrypt, &z);
	if (!c || !(c->flags & ENCRYPT_F_STRICT))
		return 0;
	return (saddr & c->strict_mask) == c->strict_net && (daddr & c->strict_mask) == c->strict_net;
}
