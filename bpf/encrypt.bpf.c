// SPDX-License-Identifier: GPL-2.0
/* to_network_strict: tcx EGRESS of the node's network devices when transparent encryption runs
 * in strict mode (lib/encrypt.h). Loaded next to endpoint.bpf.o with the same pin root, so the
 * ipcache, event ring and event budgets are the endpoint programs' own (pinned by name). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/encrypt.h"

SEC("tc")
int to_network_strict(struct __sk_buff *skb)
{
	struct iphdr ip;
	struct ethhdr eth;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) || eth.h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
		return TC_ACT_OK;
	if (!strict_unencrypted(ip.saddr, ip.daddr))
		return TC_ACT_OK;
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
	struct remote src = {};
	remote_resolve(&src, p.saddr);
	struct ev_ctx c = {};
	c.ifindex = skb->ifindex;
	c.ep_id = src.ep_id;
	c.src_identity = src.identity;
	c.dst_identity = ipcache_identity(p.daddr);
	c.bucket = src.ep_id ? SENDER_OWN(src.ep_id) : SENDER_EXT(0);
	stat_inc(STAT_DROP);
	emit_event(&p, &c, EV_DROP, DROP_UNENCRYPTED_TRAFFIC, 0, -DROP_UNENCRYPTED_TRAFFIC, 0, 0, DIR_EGRESS);
	return TC_ACT_SHOT;
}

char _license[] SEC("license") = "GPL";
