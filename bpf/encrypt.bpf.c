// SPDX-License-Identifier: GPL-2.0
/* to_network_strict: tcx EGRESS of the node's network devices when transparent encryption runs
 * in strict mode (lib/encrypt.h). Loaded next to endpoint.bpf.o with the same pin root, so the
 * ipcache, event ring and event budgets are the endpoint programs' own (pinned by name).
 *
 * Tunnel routing: pod traffic leaves as VXLAN between node addresses, which WireGuard would have
 * wrapped in UDP 51871; VXLAN reaching a network device's egress is plain. Its inner addresses
 * decide (as the pod's own packet would in native routing), and the VNI names the sender. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/overlay.h"
#include "lib/encrypt.h"

/* outer UDP + VXLAN + inner Ethernet */
#define VXLAN_INNER_OFF (8 + 8 + ETH_HLEN)

static __always_inline int strict_drop(struct __sk_buff *skb, struct pkt *p, __u32 src_identity)
{
	struct remote src = {};
	remote_resolve(&src, p->saddr, 4);
	struct ev_ctx c = {};
	c.ifindex = skb->ifindex;
	c.ep_id = src.ep_id;
	c.src_identity = src_identity ? src_identity : src.identity;
	c.dst_identity = ipcache_identity(p->daddr, 4);
	c.bucket = src.ep_id ? SENDER_OWN(src.ep_id) : SENDER_EXT(0);
	stat_inc(STAT_DROP);
	emit_event(p, &c, EV_DROP, DROP_UNENCRYPTED_TRAFFIC, 0, -DROP_UNENCRYPTED_TRAFFIC, 0, 0, DIR_EGRESS);
	return TC_ACT_SHOT;
}

/* Plain VXLAN: the inner packet is judged; the event describes it (addresses, protocol, ports). */
static __always_inline int strict_vxlan(struct __sk_buff *skb, __u32 l4_off)
{
	__u8 vx[8];
	struct iphdr in;
	if (bpf_skb_load_bytes(skb, l4_off + 8, vx, sizeof(vx)) ||
	    bpf_skb_load_bytes(skb, l4_off + VXLAN_INNER_OFF, &in, sizeof(in)) || in.version != 4) {
		/* VXLAN that does not carry IPv4 is nothing the tunnel sends: not let out in plain */
		return -1;
	}
	if (!strict_unencrypted(in.saddr, in.daddr))
		return TC_ACT_OK;
	struct pkt p = {};
	p.family = 4;
	p.proto = in.protocol;
	p.ethertype = bpf_htons(ETH_P_IP);
	p.len = skb->len;
	__builtin_memcpy(p.saddr, &in.saddr, 4);
	__builtin_memcpy(p.daddr, &in.daddr, 4);
	if ((in.protocol == IPPROTO_TCP || in.protocol == IPPROTO_UDP) && !(in.frag_off & bpf_htons(0x1fff))) {
		__be16 ports[2];
		__u32 off = l4_off + VXLAN_INNER_OFF + (in.ihl & 0xf) * 4;
		if (!bpf_skb_load_bytes(skb, off, ports, sizeof(ports))) {
			p.sport = ports[0];
			p.dport = ports[1];
			p.policy_port = ports[1];
		}
		if (in.protocol == IPPROTO_TCP)
			bpf_skb_load_bytes(skb, off + 13, &p.tcp_flags, 1);
	}
	__u32 vni = ((__u32)vx[4] << 16) | ((__u32)vx[5] << 8) | vx[6];
	return strict_drop(skb, &p, vni);
}

SEC("tc")
int to_network_strict(struct __sk_buff *skb)
{
	struct iphdr ip;
	struct ethhdr eth;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) || eth.h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
		return TC_ACT_OK;
	if (ip.protocol == IPPROTO_UDP && !(ip.frag_off & bpf_htons(0x1fff)) && tunnel_mode()) {
		struct udphdr uh;
		__u32 l4_off = ETH_HLEN + (ip.ihl & 0xf) * 4;
		if (!bpf_skb_load_bytes(skb, l4_off, &uh, sizeof(uh)) && uh.dest == bpf_htons(TUNNEL_PORT)) {
			int r = strict_vxlan(skb, l4_off);
			if (r >= 0)
				return r;
			/* VXLAN whose inner IPv4 does not read: dropped under strict mode, described by
			 * its outer header */
			if (!strict_enabled())
				return TC_ACT_OK;
			goto drop;
		}
	}
	if (!strict_unencrypted(ip.saddr, ip.daddr))
		return TC_ACT_OK;
drop:;
	/* dropped whatever else it holds; the event describes what parses */
	struct pkt p = {};
	if (parse_pkt(skb, &p) != PARSE_OK) {
		__builtin_memset(&p, 0, sizeof(p));
		p.family = 4;
		p.proto = ip.protocol;
		p.ethertype = eth.h_proto;
		p.len = skb->len;
		__builtin_memcpy(p.saddr, &ip.saddr, 4);
		__builtin_memcpy(p.daddr, &ip.daddr, 4);
	}
	return strict_drop(skb, &p, 0);
}

char _license[] SEC("license") = "GPL";
