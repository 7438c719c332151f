/* Socket-less ClusterIP load balancing (Cilium's lb4 and lb6 at the client's tc hook): a new connection
 * to a frontend VIP:port/proto is DNATed to a backend chosen by a hash of its tuple; the choice
 * is kept in a DIR_SERVICE conntrack entry keyed by the frontend tuple in the client's own table
 * (stable per connection);
 * the connection's own entry carries the rev-NAT id so replies get the VIP back as source. */
#pragma once
#include "common.h"
#include "maps.h"
#include "conntrack.h"

#ifndef offsetof
#define offsetof(t, f) __builtin_offsetof(t, f)
#endif

static __always_inline __u32 lb_hash(const struct pkt *p)
{
	/* the addresses' four words folded: an IPv4 address has zeros after its first word, so its
	 * hash is what it always was */
	const __u32 *s = (const void *)p->saddr, *d = (const void *)p->daddr;
	__u32 a = s[0] ^ s[1] ^ s[2] ^ s[3];
	__u32 b = d[0] ^ d[1] ^ d[2] ^ d[3];
	__u32 h = a * 0x9e3779b1U;
	h ^= b + 0x7f4a7c15U + (h << 6) + (h >> 2);
	h ^= ((((__u32)p->sport) << 16) | p->dport) * 0x85ebca6bU;
	h ^= p->proto;
	h ^= h >> 16;
	h *= 0x85ebca6bU;
	h ^= h >> 13;
	h *= 0xc2b2ae35U;
	h ^= h >> 16;
	return h;
}

/* May the packet's destination address be a frontend's? 0: certainly not (its bit in mb_lb_vips is
 * clear): the frontend lookup is skipped. An array of one entry: the lookup is inlined, no hash. */
static __always_inline int lb_maybe_frontend(const struct pkt *p)
{
	__u32 k = 0;
	const struct lb_vip_filter *f = bpf_map_lookup_elem(&mb_lb_vips, &k);
	if (!f)
		return 1;
	const __u32 bit = lb_vip_bit(p->daddr);
	return (f->bits[(bit >> 6) & (LB_VIP_FILTER_WORDS - 1)] >> (bit & 63)) & 1;
}

/* Rewrites the destination (dst=1) or source (dst=0) address and port of a TCP/UDP packet with
 * incremental checksum updates, and mirrors the change in `p`. A later fragment has no L4 header:
 * only its address changes (the first fragment carried the L4 checksum update). Returns 0 or -1. */
static __always_inline int l4_rewrite(struct __sk_buff *skb, struct pkt *p, int dst, const __u8 *addr,
				      __be16 port)
{
	const int has_l4 = p->frag != FRAG_LATER;
	__be32 old_ip, new_ip;
	__builtin_memcpy(&old_ip, dst ? p->daddr : p->saddr, 4);
	__builtin_memcpy(&new_ip, addr, 4);
	__be16 old_port = dst ? p->dport : p->sport;
	__u32 l4 = p->l4_off;
	if (l4 < ETH_HLEN + sizeof(struct iphdr) || l4 > ETH_HLEN + 60)
		return -1;
	__u32 csum_off;
	__u64 mangled = 0;
	if (p->proto == IPPROTO_TCP) {
		csum_off = l4 + offsetof(struct tcphdr, check);
	} else {
		csum_off = l4 + offsetof(struct udphdr, check);
		mangled = BPF_F_MARK_MANGLED_0;
	}
	if (old_ip != new_ip) {
		if (has_l4 &&
		    bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, BPF_F_PSEUDO_HDR | mangled | 4))
			return -1;
		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old_ip,
					new_ip, 4))
			return -1;
		if (bpf_skb_store_bytes(skb,
					ETH_HLEN +
						(dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr)),
					&new_ip, 4, 0))
			return -1;
	}
	if (has_l4 && old_port != port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, port, mangled | 2))
			return -1;
		if (bpf_skb_store_bytes(skb, l4 + (dst ? 2 : 0), &port, 2, 0))
			return -1;
	}
	if (dst) {
		__builtin_memcpy(p->daddr, addr, 4);
		p->dport = port;
		p->policy_port = port;
	} else {
		__builtin_memcpy(p->saddr, addr, 4);
		p->sport = port;
	}
	return 0;
}

/* Reply of a load-balanced connection: the backend's address/port back to the frontend's. */
static __noinline int lb4_rev_nat(struct __sk_buff *skb, struct pkt *p, __u16 rev_nat)
{
	__u32 key = rev_nat;
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&mb_lb4_reverse_nat, &key);
	if (!rn)
		return 0;
	__u8 addr[4];
	__builtin_memcpy(addr, rn->addr, 4);
	return l4_rewrite(skb, p, 0, addr, rn->port);
}

/* ICMP error about a load-balanced connection (e.g. port unreachable from the backend): the
 * inner packet (client -> backend) gets the frontend back as destination, and the outer source
 * too when the backend itself sent the error, so the client's socket (connected to the VIP)
 * matches it. The ICMP checksum covers the inner header: every change is folded into it. */
static __noinline int lb4_rev_nat_icmp(struct __sk_buff *skb, struct pkt *p, __u16 rev_nat)
{
	__u32 key = rev_nat;
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&mb_lb4_reverse_nat, &key);
	if (!rn)
		return 0;
	if (p->in_proto != IPPROTO_TCP && p->in_proto != IPPROTO_UDP)
		return 0;
	__u32 icmp = p->l4_off;
	__u32 in_ip = icmp + 8;
	__u32 in_l4 = p->in_l4_off;
	if (icmp < ETH_HLEN + sizeof(struct iphdr) || icmp > ETH_HLEN + 60)
		return -1;
	if (in_l4 < in_ip + sizeof(struct iphdr) || in_l4 > in_ip + 60)
		return -1;
	__u32 icmp_csum = icmp + 2;
	__be32 backend, vip;
	__builtin_memcpy(&backend, p->in_daddr, 4);
	__builtin_memcpy(&vip, rn->addr, 4);
	__be16 vport = rn->port;
	__be16 bport = p->in_dport;
	if (backend != vip) {
		__sum16 old_csum, new_csum;
		if (bpf_skb_load_bytes(skb, in_ip + offsetof(struct iphdr, check), &old_csum, 2))
			return -1;
		if (bpf_l3_csum_replace(skb, in_ip + offsetof(struct iphdr, check), backend, vip, 4))
			return -1;
		if (bpf_skb_store_bytes(skb, in_ip + offsetof(struct iphdr, daddr), &vip, 4, 0))
			return -1;
		if (bpf_skb_load_bytes(skb, in_ip + offsetof(struct iphdr, check), &new_csum, 2))
			return -1;
		if (bpf_l4_csum_replace(skb, icmp_csum, backend, vip, 4))
			return -1;
		if (bpf_l4_csum_replace(skb, icmp_csum, old_csum, new_csum, 2))
			return -1;
	}
	if (bport != vport) {
		if (bpf_skb_store_bytes(skb, in_l4 + 2, &vport, 2, 0))
			return -1;
		if (bpf_l4_csum_replace(skb, icmp_csum, bport, vport, 2))
			return -1;
	}
	__builtin_memcpy(p->in_daddr, rn->addr, 4);
	p->in_dport = vport;
	__be32 outer_src;
	__builtin_memcpy(&outer_src, p->saddr, 4);
	if (outer_src == backend && backend != vip) {
		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), backend,
					vip, 4))
			return -1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &vip, 4,
					0))
			return -1;
		__builtin_memcpy(p->saddr, rn->addr, 4);
	}
	return 0;
}

/* An IPv6 address compared as four words (no memcmp call in BPF). */
static __always_inline int ip6_equal(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const void *)a, *y = (const void *)b;
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

/* l4_rewrite for IPv6: no header checksum; the L4 checksum's pseudo header takes the difference
 * of the 16-byte addresses (bpf_csum_diff, folded in with BPF_F_PSEUDO_HDR, as Cilium's lb6). */
static __always_inline int l6_rewrite(struct __sk_buff *skb, struct pkt *p, int dst, __u8 *addr,
				      __be16 port)
{
	const int has_l4 = p->frag != FRAG_LATER;
	/* no copies of the addresses: the caller's frame plus this one stay under 512 bytes */
	__u8 *old_ip = dst ? p->daddr : p->saddr;
	__be16 old_port = dst ? p->dport : p->sport;
	__u32 l4 = p->l4_off;
	if (l4 < ETH_HLEN + sizeof(struct ipv6hdr))
		return -1;
	__u32 csum_off;
	__u64 mangled = 0;
	if (p->proto == IPPROTO_TCP) {
		csum_off = l4 + offsetof(struct tcphdr, check);
	} else {
		csum_off = l4 + offsetof(struct udphdr, check);
		mangled = BPF_F_MARK_MANGLED_0;
	}
	if (!ip6_equal(old_ip, addr)) {
		__s64 diff = bpf_csum_diff((__be32 *)old_ip, 16, (__be32 *)addr, 16, 0);
		if (has_l4 && bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled))
			return -1;
		if (bpf_skb_store_bytes(skb,
					ETH_HLEN +
						(dst ? offsetof(struct ipv6hdr, daddr) : offsetof(struct ipv6hdr, saddr)),
					addr, 16, 0))
			return -1;
	}
	if (has_l4 && old_port != port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, port, mangled | 2))
			return -1;
		if (bpf_skb_store_bytes(skb, l4 + (dst ? 2 : 0), &port, 2, 0))
			return -1;
	}
	__builtin_memcpy(old_ip, addr, 16);
	if (dst) {
		p->dport = port;
		p->policy_port = port;
	} else {
		p->sport = port;
	}
	return 0;
}

/* Service translation for a packet leaving endpoint `ep`, one shape for both families: the
 * frontend in mb_lb4_services / mb_lb6_services (key lb4_key / lb6_key), the backend in
 * mb_lb4_backends / mb_lb6_backends; the DIR_SERVICE entry's key carries the family, so it never
 * answers for a tuple of the other. `fam` is a constant at each caller (lb4_xlate, lb6_xlate):
 * every family choice folds away at compile time. Returns 0 (no service, or translated:
 * *rev_nat set) or a drop reason. */
static __always_inline int lb_xlate(struct __sk_buff *skb, struct pkt *p, void *own, __u16 ep,
				    __u16 *rev_nat, const __u8 fam)
{
	union {
		struct lb4_key k4;
		struct lb6_key k6;
	} lk = {};
	void *services = fam == 6 ? (void *)&mb_lb6_services : (void *)&mb_lb4_services;
	void *backends = fam == 6 ? (void *)&mb_lb6_backends : (void *)&mb_lb4_backends;
	if (fam == 6) {
		__builtin_memcpy(lk.k6.vip, p->daddr, 16);
		lk.k6.dport = p->dport;
		lk.k6.proto = p->proto;
	} else {
		__builtin_memcpy(lk.k4.vip, p->daddr, 4);
		lk.k4.dport = p->dport;
		lk.k4.proto = p->proto;
	}
	struct lb4_service *svc = bpf_map_lookup_elem(services, &lk);
	if (!svc)
		return 0;
	__u16 count = svc->count;
	__u16 rn = svc->rev_nat;
	if (count == 0)
		return DROP_NO_SERVICE;
	/* the clock only for a service's packets */
	const __u64 now = bpf_ktime_get_ns();
	struct ct_key sk;
	ct_key_fill(&sk, p->saddr, p->daddr, p->sport, p->dport, p->proto, fam, DIR_SERVICE, ep);
	struct ct_val *sv = ct_get(own, &sk, now);
	void *be = 0;
	__u32 bid = 0;
	__u64 life = p->proto == IPPROTO_TCP ? CT_LIFETIME_TCP : CT_LIFETIME_NONTCP;
	if (sv) {
		bid = sv->src_identity;
		be = bpf_map_lookup_elem(backends, &bid);
		if (be && sv->rev_nat == rn) {
			__u64 exp = now + life;
			if (exp > sv->expires + 1000000000ULL)
				sv->expires = exp;
		} else {
			be = 0;
		}
	}
	if (!be) {
		const __u16 slot = (__u16)(lb_hash(p) % count) + 1;
		if (fam == 6)
			lk.k6.slot = slot;
		else
			lk.k4.slot = slot;
		struct lb4_service *s = bpf_map_lookup_elem(services, &lk);
		if (!s)
			return DROP_NO_SERVICE;
		bid = s->backend_id;
		be = bpf_map_lookup_elem(backends, &bid);
		if (!be)
			return DROP_NO_SERVICE;
		struct ct_val nv = {};
		nv.created = now;
		nv.expires = now + life;
		nv.src_identity = bid;
		nv.rev_nat = rn;
		if (!own)
			return DROP_CT_NO_MAP;
		if (bpf_map_update_elem(own, &sk, &nv, BPF_ANY))
			return DROP_CT_CREATE_FAILED;
	}
	if (fam == 6) {
		struct lb6_backend *b6 = be;
		if (l6_rewrite(skb, p, 1, b6->addr, b6->port))
			return DROP_INVALID;
	} else {
		struct lb4_backend *b4 = be;
		__u8 addr[4];
		__builtin_memcpy(addr, b4->addr, 4);
		if (l4_rewrite(skb, p, 1, addr, b4->port))
			return DROP_INVALID;
	}
	*rev_nat = rn;
	stat_inc(STAT_LB_XLATE);
	return 0;
}

/* lb_xlate's two subprograms (from_container's frame is at the verifier's limit). */
static __noinline int lb4_xlate(struct __sk_buff *skb, struct pkt *p, void *own, __u16 ep,
				__u16 *rev_nat)
{
	return lb_xlate(skb, p, own, ep, rev_nat, 4);
}

static __noinline int lb6_xlate(struct __sk_buff *skb, struct pkt *p, void *own, __u16 ep,
				__u16 *rev_nat)
{
	return lb_xlate(skb, p, own, ep, rev_nat, 6);
}

/* Reply of a load-balanced IPv6 connection: the backend's address/port back to the frontend's. */
static __noinline int lb6_rev_nat(struct __sk_buff *skb, struct pkt *p, __u16 rev_nat)
{
	__u32 key = rev_nat;
	struct lb6_reverse_nat *rn = bpf_map_lookup_elem(&mb_lb6_reverse_nat, &key);
	if (!rn)
		return 0;
	return l6_rewrite(skb, p, 0, rn->addr, rn->port);
}
