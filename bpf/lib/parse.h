/* Packet parsing: Ethernet -> IPv4 -> TCP/UDP/ICMP (+ the inner tuple of ICMP errors). */
#pragma once
#include "common.h"

#define PARSE_OK 0
#define PARSE_PASS 1 /* not IPv4: passed through for now (IPv6, ARP, ...) */

static __always_inline int is_icmp_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_SOURCE_QUENCH || type == ICMP_REDIRECT ||
	       type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

/* Returns PARSE_OK, PARSE_PASS or a negative drop reason. */
static __always_inline int parse_pkt(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return PARSE_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return -DROP_CT_INVALID_HDR;
	__u32 ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return -DROP_INVALID;
	p->family = 4;
	p->proto = ip->protocol;
	p->len = skb->len;
	__builtin_memcpy(p->saddr, &ip->saddr, 4);
	__builtin_memcpy(p->daddr, &ip->daddr, 4);
	if (ip->frag_off & bpf_htons(0x3fff)) /* MF or offset: no L4 header to match on */
		return -DROP_FRAG_NOSUPPORT;
	void *l4 = (void *)ip + ihl;
	p->l4_off = (__u16)(sizeof(*eth) + ihl);
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end)
			return -DROP_CT_INVALID_HDR;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		p->policy_port = th->dest;
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > data_end)
			return -DROP_CT_INVALID_HDR;
		p->sport = uh->source;
		p->dport = uh->dest;
		p->policy_port = uh->dest;
	} else if (p->proto == IPPROTO_ICMP) {
		struct icmphdr *ih = l4;
		if ((void *)(ih + 1) > data_end)
			return -DROP_CT_INVALID_HDR;
		p->icmp_type = ih->type;
		p->icmp_code = ih->code;
		p->policy_port = bpf_htons((__u16)ih->type);
		if (ih->type == ICMP_ECHO) {
			p->sport = ih->un.echo.id;
		} else if (ih->type == ICMP_ECHOREPLY) {
			p->dport = ih->un.echo.id;
		} else if (is_icmp_error(ih->type)) {
			struct iphdr *in = (void *)(ih + 1);
			if ((void *)(in + 1) > data_end)
				return PARSE_OK; /* truncated error: treated as unrelated ICMP */
			__u32 in_ihl = in->ihl * 4;
			if (in_ihl < sizeof(*in) || in_ihl > 60)
				return PARSE_OK;
			__u8 *il4 = (__u8 *)in + in_ihl;
			if ((void *)(il4 + 8) > data_end)
				return PARSE_OK;
			p->is_icmp_err = 1;
			p->in_l4_off = (__u16)(p->l4_off + sizeof(*ih) + in_ihl);
			p->in_proto = in->protocol;
			__builtin_memcpy(p->in_saddr, &in->saddr, 4);
			__builtin_memcpy(p->in_daddr, &in->daddr, 4);
			if (in->protocol == IPPROTO_TCP || in->protocol == IPPROTO_UDP) {
				__builtin_memcpy(&p->in_sport, il4, 2);
				__builtin_memcpy(&p->in_dport, il4 + 2, 2);
			} else if (in->protocol == IPPROTO_ICMP) {
				__be16 id;
				__builtin_memcpy(&id, il4 + 4, 2);
				if (il4[0] == ICMP_ECHO)
					p->in_sport = id;
				else if (il4[0] == ICMP_ECHOREPLY)
					p->in_dport = id;
			}
		}
	}
	return PARSE_OK;
}
