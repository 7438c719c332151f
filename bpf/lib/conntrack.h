/* Connection tracking. Entries are keyed by the tuple of the connection's first packet plus the
 * endpoint and the direction it was seen in, so a pod-to-pod connection on one node has an
 * entry at each veth. At a hook of direction D a packet is:
 *   ESTABLISHED if (tuple, D) exists, REPLY if (reversed tuple, !D) exists,
 *   RELATED (ICMP error) if its outer addresses are the inner packet's peers, reversed, and
 *     (inner tuple, !D) or (reversed inner tuple, D) exists, else NEW.
 * Entries live in per-endpoint tables (maps.h): egress and service entries in CT_OWN of the
 * endpoint, ingress entries in CT_OWN of the local endpoint that sent the first packet, or in
 * CT_EXT of the destination when the sender is not an endpoint of this node. */
#pragma once
#include "common.h"
#include "maps.h"
#include "policy.h"

static __always_inline __u8 dir_other(__u8 d)
{
	return d == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS;
}

static __always_inline void *ct_table(__u32 idx)
{
	return bpf_map_lookup_elem(&mb_ct_tables, &idx);
}

/* Table of an ingress entry of endpoint `ep` whose first packet came from `sender_ep` (0: not a
 * local endpoint). */
static __always_inline __u32 ct_ingress_idx(__u16 ep, __u16 sender_ep)
{
	return sender_ep ? CT_OWN(sender_ep) : CT_EXT(ep);
}

/* Keys carry the family: an IPv6 tuple and an IPv4 one never share an entry. */
static __always_inline void ct_key_fill(struct ct_key *k, const __u8 *s, const __u8 *d, __be16 sp,
					__be16 dp, __u8 proto, __u8 fam, __u8 dir, __u16 ep)
{
	__builtin_memcpy(k->saddr, s, 16);
	__builtin_memcpy(k->daddr, d, 16);
	k->sport = sp;
	k->dport = dp;
	k->proto = proto;
	k->family = fam;
	k->dir = dir;
	k->pad = 0;
	k->ep_id = ep;
	k->pad2 = 0;
}

static __always_inline struct ct_val *ct_get(void *tbl, struct ct_key *k, __u64 now)
{
	if (!tbl)
		return 0;
	struct ct_val *v = bpf_map_lookup_elem(tbl, k);
	if (v && v->expires > now)
		return v;
	return 0;
}

/* Looks the packet up at endpoint `ep` (own table `own`); the remote peer (`remote_addr`) is
 * resolved only when an ingress entry has to be found. Returns CT_* and the entry (NULL for
 * NEW); `k` holds the key of the entry found, or of the last lookup. */
static __always_inline int ct_lookup(const struct pkt *p, void *own, __u16 ep, __u8 dir,
				     struct remote *rm, const __u8 *remote_addr, __u64 now,
				     struct ct_key *k, struct ct_val **out)
{
	struct ct_val *v;
	*out = 0;
	if (p->is_icmp_err) {
		/* An error relates to a connection only when it travels between the connection's
		 * peers: from the inner packet's destination back to its source. Anything else would
		 * carry data to a third host under a live connection's name. */
		if (__builtin_memcmp(p->saddr, p->in_daddr, 4) != 0 ||
		    __builtin_memcmp(p->daddr, p->in_saddr, 4) != 0)
			return CT_NEW;
		remote_resolve(rm, remote_addr, p->family);
		void *ing = ct_table(ct_ingress_idx(ep, rm->ep_id));
		__u8 od = dir_other(dir);
		/* the inner addresses are the outer ones, reversed */
		ct_key_fill(k, p->daddr, p->saddr, p->in_sport, p->in_dport, p->in_proto, p->family, od, ep);
		v = ct_get(od == DIR_INGRESS ? ing : own, k, now);
		if (!v) {
			ct_key_fill(k, p->saddr, p->daddr, p->in_dport, p->in_sport, p->in_proto, p->family, dir, ep);
			v = ct_get(dir == DIR_INGRESS ? ing : own, k, now);
		}
		*out = v;
		return v ? CT_RELATED : CT_NEW;
	}
	if (dir == DIR_EGRESS) {
		ct_key_fill(k, p->saddr, p->daddr, p->sport, p->dport, p->proto, p->family, DIR_EGRESS, ep);
		v = ct_get(own, k, now);
		if (v) {
			*out = v;
			return CT_ESTABLISHED;
		}
		remote_resolve(rm, remote_addr, p->family);
		ct_key_fill(k, p->daddr, p->saddr, p->dport, p->sport, p->proto, p->family, DIR_INGRESS, ep);
		v = ct_get(ct_table(ct_ingress_idx(ep, rm->ep_id)), k, now);
		*out = v;
		return v ? CT_REPLY : CT_NEW;
	}
	ct_key_fill(k, p->daddr, p->saddr, p->dport, p->sport, p->proto, p->family, DIR_EGRESS, ep);
	v = ct_get(own, k, now);
	if (v) {
		*out = v;
		return CT_REPLY;
	}
	remote_resolve(rm, remote_addr, p->family);
	ct_key_fill(k, p->saddr, p->daddr, p->sport, p->dport, p->proto, p->family, DIR_INGRESS, ep);
	v = ct_get(ct_table(ct_ingress_idx(ep, rm->ep_id)), k, now);
	*out = v;
	return v ? CT_ESTABLISHED : CT_NEW;
}

/* Updates lifetime and seen flags of an existing entry; returns 1 when the packet is reported
 * under Cilium's "medium" monitor aggregation (__ct_update_timeout with the agent's default
 * --monitor-aggregation-flags syn,fin,rst, and ACTION_CLOSE): a SYN, FIN or RST not seen before in
 * its direction, every FIN and RST, the first reply, and the first packet of a direction more
 * than `interval_s` seconds after that direction's last report (bpf/README.md "Monitor
 * aggregation"). */
static __always_inline int ct_update(struct ct_val *v, const struct pkt *p, int reply, __u64 now,
				     __u16 interval_s)
{
	int trace = 0;
	__u8 f = p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST);
	__u16 now_s = (__u16)(now / 1000000000ULL);
	/* the packet's direction: its seen flags and when it was last reported */
	__u8 *seen = reply ? &v->rev_flags : &v->fwd_flags;
	__u16 *reported = reply ? &v->rev_report : &v->fwd_report;
	if (reply && !(v->state & CT_F_SEEN_REPLY)) {
		v->state |= CT_F_SEEN_REPLY;
		trace = 1;
	}
	if (f & ~*seen) {
		*seen |= f;
		trace = 1;
	}
	if (trace || f & (TCP_FIN | TCP_RST) || (__u16)(now_s - *reported) > interval_s) {
		*reported = now_s;
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

/* What a new entry records besides the tuple. */
struct ct_new {
	__u32 src_identity;
	__u32 pol_rev;
	__u16 proxy_port;
	__u16 proxy_slot;
	__u16 rev_nat;
	__u16 ep_id;      /* the entry's endpoint */
	__u8 dir;         /* the entry's direction */
	__u8 state;
	__u16 dest_ep;    /* egress entries: the local destination decided at the source */
};

/* Creates the entry of the packet's tuple in `tbl`; returns 0, or a drop reason. A subprogram:
 * its locals stay off the callers' stack frame. */
static __noinline int ct_create(void *tbl, const struct pkt *p, const struct ct_new *n, __u64 now)
{
	if (!tbl)
		return DROP_CT_NO_MAP;
	struct ct_key k;
	struct ct_val v = {};
	ct_key_fill(&k, p->saddr, p->daddr, p->sport, p->dport, p->proto, p->family, n->dir, n->ep_id);
	v.created = now;
	v.fwd_flags = p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST);
	v.fwd_report = (__u16)(now / 1000000000ULL); /* a new connection is traced */
	if (p->proto == IPPROTO_TCP)
		v.expires = now + ((p->tcp_flags & TCP_RST) ? CT_LIFETIME_CLOSE : CT_LIFETIME_TCP_SYN);
	else
		v.expires = now + CT_LIFETIME_NONTCP;
	v.proxy_port = n->proxy_port;
	v.proxy_slot = n->proxy_slot;
	v.src_identity = n->src_identity;
	v.rev_nat = n->rev_nat;
	v.dest_ep = n->dest_ep;
	v.state = n->state;
	v.pol_rev = n->pol_rev;
	if (bpf_map_update_elem(tbl, &k, &v, BPF_ANY))
		return DROP_CT_CREATE_FAILED;
	return 0;
}
