/* Identity-aware L3/L4 policy: the lookup contract of src/policy/types.ts, on one LPM trie. */
#pragma once
#include "common.h"
#include "maps.h"

/* Longest prefix of `addr` (family 4: its first 4 bytes; 6: all 16) in the ipcache. The family
 * is part of the key, so an IPv6 address never matches an IPv4 prefix (nor ::/0 an IPv4 one).
 * An address with an entry of its own (a pod, a node) is its own longest prefix: the exact-address
 * hash answers it, the trie everything else. */
static __always_inline struct ipcache_val *ipcache_lookup_fam(const __u8 *addr, __u8 fam)
{
	struct ipcache_key k = {};
	if (fam == 6) {
		k.prefixlen = IPCACHE_STATIC_PREFIX + 128;
		k.family = 6;
		__builtin_memcpy(k.addr, addr, 16);
	} else {
		k.prefixlen = IPCACHE_STATIC_PREFIX + 32;
		k.family = 4;
		__builtin_memcpy(k.addr, addr, 4);
	}
	struct ipcache_val *v = bpf_map_lookup_elem(&mb_ipcache_host, &k);
	return v ? v : bpf_map_lookup_elem(&mb_ipcache, &k);
}

/* An IPv4 address (nodes, tunnel endpoints, the WireGuard path: IPv4 only). */
static __always_inline struct ipcache_val *ipcache_lookup(const __u8 *addr)
{
	return ipcache_lookup_fam(addr, 4);
}

#define IDENTITY_WORLD 2

static __always_inline __u32 ipcache_identity(const __u8 *addr, __u8 fam)
{
	struct ipcache_val *v = ipcache_lookup_fam(addr, fam);
	return v ? v->identity : IDENTITY_WORLD;
}

/* The remote peer of a packet, resolved from the ipcache at most once per packet. */
struct remote {
	__u32 identity;
	__u16 ep_id;    /* local endpoint id, 0 when the peer is not an endpoint of this node */
	__u8 known;
	__u8 pad;
};

/* The peer from its ipcache entry `v` (0: world), already looked up. */
static __always_inline void remote_from(struct remote *r, const struct ipcache_val *v)
{
	r->identity = v ? v->identity : IDENTITY_WORLD;
	r->ep_id = v ? v->ep_id : 0;
	r->known = 1;
}

static __always_inline void remote_resolve(struct remote *r, const __u8 *addr, __u8 fam)
{
	if (r->known)
		return;
	remote_from(r, ipcache_lookup_fam(addr, fam));
}

/* Policy port of a packet: dport for TCP/UDP, the ICMP (ICMPv6) type for ICMP (ICMPv6), 0 for
 * other protocols. */
static __always_inline __be16 policy_port_of(const struct pkt *p)
{
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_ICMP &&
	    p->proto != IPPROTO_ICMPV6)
		return 0;
	return p->policy_port;
}

struct policy_result {
	__u32 drop;       /* 0 allow, else drop reason */
	__u16 proxy_port;
	__u16 proxy_slot;
	__u8 match_type;
	__u8 auth_type;
	__u8 audited;     /* a drop turned into a pass by the endpoint's audit mode */
	__u8 default_deny; /* the direction is default deny (it reports a verdict whatever decided) */
};

/* 1. e1 = LPM among identity == remote, e2 = LPM among identity == 0
 * 2. a deny in either -> 181; 3. neither -> default deny ? 133 : allow;
 * 4. the longer (tie: e1) allow wins.
 * `ep_flags`: the deciding endpoint's config flags (its default deny in `dir`, and whether the
 * trie holds any entry of it in `dir` at all: none, step 3 without the two lookups). */
static __always_inline void policy_lookup(__u16 ep, __u8 dir, __u8 ep_flags, __u32 remote,
					  __u8 proto, __be16 port, struct policy_result *r)
{
	const __u8 default_deny = ep_flags & (dir == DIR_INGRESS ? EP_F_DENY_INGRESS : EP_F_DENY_EGRESS);
	struct policy_val *e1 = 0, *e2 = 0;
	if (!(ep_flags & (dir == DIR_INGRESS ? EP_F_NO_POLICY_INGRESS : EP_F_NO_POLICY_EGRESS))) {
		struct policy_key k;
		k.prefixlen = POLICY_FULL_PREFIX;
		k.ep_id = ep;
		k.dir = dir;
		k.pad = 0;
		k.identity = remote;
		k.proto = proto;
		k.dport = port;
		e1 = bpf_map_lookup_elem(&mb_policy, &k);
		k.identity = 0;
		e2 = bpf_map_lookup_elem(&mb_policy, &k);
	}
	stat_inc(STAT_POLICY_LOOKUPS);
	r->proxy_port = 0;
	r->proxy_slot = 0;
	r->match_type = 0;
	r->auth_type = 0;
	r->audited = 0;
	r->default_deny = default_deny;
	if (e1 && (e1->flags & POL_F_DENY)) {
		r->drop = DROP_POLICY_DENY;
		r->match_type = e1->match_type;
		return;
	}
	if (e2 && (e2->flags & POL_F_DENY)) {
		r->drop = DROP_POLICY_DENY;
		r->match_type = e2->match_type;
		return;
	}
	struct policy_val *w;
	if (e1 && e2)
		w = e1->spec_len >= e2->spec_len ? e1 : e2;
	else if (e1)
		w = e1;
	else if (e2)
		w = e2;
	else {
		r->drop = default_deny ? DROP_POLICY : 0;
		return;
	}
	r->drop = 0;
	r->match_type = w->match_type;
	r->auth_type = w->auth_type;
	r->proxy_port = w->proxy_port;
	r->proxy_slot = w->proxy_slot;
	if (w->auth_type)
		r->drop = DROP_POLICY_AUTH_REQUIRED; /* no auth map yet: fail closed */
}

/* Policy audit mode, as Cilium's policy_can_{ingress,egress} under POLICY_AUDIT_MODE: when the
 * endpoint whose policy decided (`ep_flags`: ITS config, so audit on one endpoint never opens
 * another endpoint's ingress or egress) is in audit mode, every L3/L4 policy drop (default deny
 * 133, deny rule 181, auth required 189) becomes a pass marked audited. A redirect the policy
 * asks for is kept: the L7 proxy still enforces its rules (Cilium audits L3/L4 only), and
 * proxy failures (178/179/180) are not policy verdicts and stay drops. */
static __always_inline void policy_audit(struct policy_result *r, __u8 ep_flags)
{
	if (r->drop && (ep_flags & EP_F_AUDIT)) {
		r->drop = 0;
		r->audited = 1;
	}
}
