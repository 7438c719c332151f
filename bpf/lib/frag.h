/* Fragment tracking, as Cilium's (ipv4_handle_fragmentation; IPv6 the same way, by the fragment
 * header's 32-bit id): the first fragment's L4 ports are remembered by (saddr, daddr, IP id,
 * proto, family); later fragments take their ports from there and
 * are then enforced like any packet of the datagram's connection; a later fragment whose first
 * fragment was not seen is dropped (FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND, 175). The state is
 * a DIR_FRAG entry in the sender's conntrack table (so one endpoint cannot evict another's), and
 * is registered only for a first fragment that passes, at each hook it passes, with the tuple as
 * seen at that hook (before any NAT the hook applies). */
#pragma once
#include "common.h"
#include "maps.h"
#include "conntrack.h"

/* A first fragment's registration, taken before the hook rewrites anything. */
struct frag_reg {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 id;
	__be16 id_lo;
	__be16 sport;
	__be16 dport;
	__be16 policy_port;
	__u8 proto;
	__u8 family;
};

/* The id sits in sport (IPv4's 16 bits; IPv6's high half) and dport (IPv6's low half). */
static __always_inline void frag_key(struct ct_key *k, const struct pkt *p)
{
	ct_key_fill(k, p->saddr, p->daddr, p->ip_id, p->ip_id_lo, p->proto, p->family, DIR_FRAG, 0);
}

static __always_inline void frag_snapshot(struct frag_reg *r, const struct pkt *p)
{
	__builtin_memcpy(r->saddr, p->saddr, 16);
	__builtin_memcpy(r->daddr, p->daddr, 16);
	r->id = p->ip_id;
	r->id_lo = p->ip_id_lo;
	r->family = p->family;
	r->sport = p->sport;
	r->dport = p->dport;
	r->policy_port = p->policy_port;
	r->proto = p->proto;
}

static __noinline void frag_register(void *tbl, const struct frag_reg *r, __u64 now)
{
	struct ct_key k = {};
	struct ct_val v = {};
	if (!tbl)
		return;
	__builtin_memcpy(k.saddr, r->saddr, 16);
	__builtin_memcpy(k.daddr, r->daddr, 16);
	k.sport = r->id;
	k.dport = r->id_lo;
	k.proto = r->proto;
	k.family = r->family;
	k.dir = DIR_FRAG;
	v.created = now;
	v.expires = now + CT_LIFETIME_FRAG;
	v.frag_sport = r->sport;
	v.frag_dport = r->dport;
	v.frag_policy_port = r->policy_port;
	bpf_map_update_elem(tbl, &k, &v, BPF_ANY);
}

/* Ports of a later fragment from its first fragment; returns 0, or -1 when unknown. */
static __always_inline int frag_ports(void *tbl, struct pkt *p, __u64 now)
{
	struct ct_key k;
	frag_key(&k, p);
	struct ct_val *v = ct_get(tbl, &k, now);
	if (!v)
		return -1;
	p->sport = v->frag_sport;
	p->dport = v->frag_dport;
	p->policy_port = v->frag_policy_port;
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6)
		p->icmp_type = (__u8)bpf_ntohs(v->frag_policy_port);
	return 0;
}
