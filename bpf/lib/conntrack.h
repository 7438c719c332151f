/* Connection tracking. Entries are keyed by the tuple of the connection's first packet plus the
 * endpoint and the direction it was seen in, so a pod-to-pod connection on one node has an
 * entry at each veth. At a hook of direction D a packet is:
 *   ESTABLISHED if (tuple, D) exists, REPLY if (reversed tuple, !D) exists,
 *   RELATED (ICMP error) if (inner tuple, !D) or (reversed inner tuple, D) exists, else NEW. */
#pragma once
#include "common.h"
#include "maps.h"

static __always_inline __u8 dir_other(__u8 d)
{
	return d == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS;
}

static __always_inline void ct_key_fill(struct ct_key *k, const __u8 *s, const __u8 *d, __be16 sp,
					__be16 dp, __u8 proto, __u8 dir, __u16 ep)
{
	__builtin_memcpy(k->saddr, s, 16);
	__builtin_memcpy(k->daddr, d, 16);
	k->sport = sp;
	k->dport = dp;
	k->proto = proto;
	k->family = 4;
	k->dir = dir;
	k->pad = 0;
	k->ep_id = ep;
	k->pad2 = 0;
}

static __always_inline struct ct_val *ct_get(struct ct_key *k, __u64 now)
{
	struct ct_val *v = bpf_map_lookup_elem(&mb_ct, k);
	if (v && v->expires > now)
		return v;
	return 0;
}

/* Looks the packet up; returns CT_* and the entry (NULL for NEW). */
static __always_inline int ct_lookup(const struct pkt *p, __u16 ep, __u8 dir, __u64 now,
				     struct ct_key *k, struct ct_val **out)
{
	struct ct_val *v;
	if (p->is_icmp_err) {
		ct_key_fill(k, p->in_saddr, p->in_daddr, p->in_sport, p->in_dport, p->in_proto,
			    dir_other(dir), ep);
		v = ct_get(k, now);
		if (!v) {
			ct_key_fill(k, p->in_daddr, p->in_saddr, p->in_dport, p->in_sport,
				    p->in_proto, dir, ep);
			v = ct_get(k, now);
		}
		*out = v;
		return v ? CT_RELATED : CT_NEW;
	}
	ct_key_fill(k, p->saddr, p->daddr, p->sport, p->dport, p->proto, dir, ep);
	v = ct_get(k, now);
	if (v) {
		*out = v;
		return CT_ESTABLISHED;
	}
	ct_key_fill(k, p->daddr, p->saddr, p->dport, p->sport, p->proto, dir_other(dir), ep);
	v = ct_get(k, now);
	*out = v;
	return v ? CT_REPLY : CT_NEW;
}

/* Updates lifetime and seen flags of an existing entry; returns 1 when the packet should be
 * traced under "medium" monitor aggregation (new SYN/FIN/RST in its direction, first reply). */
static __always_inline int ct_update(struct ct_val *v, const struct pkt *p, int reply, __u64 now)
{
	int trace = 0;
	__u8 f = p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST);
	if (reply) {
		if (!(v->state & CT_F_SEEN_REPLY)) {
			v->state |= CT_F_SEEN_REPLY;
			trace = 1;
		}
		if (f & ~v->rev_flags) {
			v->rev_flags |= f;
			trace = 1;
		}
	} else if (f & ~v->fwd_flags) {
		v->fwd_flags |= f;
		trace = 1;
	}
	__u64 life;
	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & TCP_RST)
			v->state |= CT_F_RST;
		if (p->tcp_flags & TCP_FIN)
			v->state |= reply ? CT_F_REV_FIN : CT_F_FWD_FIN;
		if ((v->state & CT_F_RST) ||
		    (v->state & (CT_F_FWD_FIN | CT_F_REV_FIN)) == (CT_F_FWD_FIN | CT_F_REV_FIN))
			life = CT_LIFETIME_CLOSE;
		else if (v->state & CT_F_SEEN_REPLY)
			life = CT_LIFETIME_TCP;
		else
			life = CT_LIFETIME_TCP_SYN;
	} else {
		life = CT_LIFETIME_NONTCP;
	}
	__u64 exp = now + life;
	/* avoid dirtying the cache line on every packet: refresh when 1 s or more changed */
	if (exp > v->expires + 1000000000ULL || exp < v->expires)
		v->expires = exp;
	return trace;
}

static __always_inline int ct_create(struct ct_key *k, const struct pkt *p, __u8 dir, __u16 ep,
				     __u64 now, __u32 src_identity, __u16 proxy_port,
				     __u16 proxy_slot, __u16 rev_nat, __u8 state)
{
	struct ct_val v = {};
	ct_key_fill(k, p->saddr, p->daddr, p->sport, p->dport, p->proto, dir, ep);
	v.created = now;
	v.fwd_flags = p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST);
	if (p->proto == IPPROTO_TCP)
		v.expires = now + ((p->tcp_flags & TCP_RST) ? CT_LIFETIME_CLOSE : CT_LIFETIME_TCP_SYN);
	else
		v.expires = now + CT_LIFETIME_NONTCP;
	v.proxy_port = proxy_port;
	v.proxy_slot = proxy_slot;
	v.src_identity = src_identity;
	v.rev_nat = rev_nat;
	v.state = state;
	return bpf_map_update_elem(&mb_ct, k, &v, BPF_ANY);
}
