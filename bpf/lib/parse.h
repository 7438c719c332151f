/* Packet parsing and validation: Ethernet -> IPv4 -> TCP/UDP/ICMP (+ the inner tuple of ICMP
 * errors), and when enabled Ethernet -> IPv6 -> extension headers -> TCP/UDP/ICMPv6 (parse_ipv6).
 * What is not parsed is not passed: endpoints drop PARSE_OTHER (UNSUPPORTED_L3_PROTOCOL)
 * and every negative result (a drop reason). An IPv4 packet passes the parser only when the
 * kernel would accept it too, so no state is ever created for a packet the kernel then drops:
 * version, header length, header checksum, total length within the frame, well-formed options
 * without source routing, no reserved flag, and an L4 header inside the IP payload (first
 * fragments included; later fragments may not overlap a TCP header, RFC 1858). L4 checksums are
 * not verified (the destination does). Addresses are filled in as soon as they are read, so
 * drops of malformed packets carry them. */
#pragma once
#include "common.h"
#include "maps.h"

#define PARSE_OK 0
#define PARSE_ARP 1   /* ARP: not routed, passed */
#define PARSE_OTHER 2 /* any other ethertype, or a VLAN tag: endpoints drop it (139) */
#define PARSE_PULL 3  /* internal: headers beyond the linear data */
#define PARSE_ND 4    /* IPv6 neighbour discovery on the link: not routed, passed (as ARP) */

/* Enough linear bytes for every header the parser reads: Ethernet, IPv4 with options, ICMP,
 * the inner IPv4 header with options and 8 bytes of its L4 header. */
#define PARSE_PULL_LEN (ETH_HLEN + 60 + 8 + 60 + 8)

/* ICMP errors that may relate to a connection (Cilium relates these three; source quench and
 * redirect are plain ICMP, decided by policy). */
static __always_inline int is_icmp_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

/* Headers read beyond the linear data: pull if the packet is longer, else it is truncated. */
static __always_inline int short_read(const struct __sk_buff *skb, __u32 need, int reason)
{
	return skb->len >= need ? PARSE_PULL : -reason;
}

/* Addresses (and ports) of an IPv4 packet, or addresses of an IPv6 one, behind up to two VLAN
 * tags, for the drop event only: nothing read here is trusted. */
static __always_inline void peek_tagged(void *data, void *data_end, struct pkt *p, __be16 proto)
{
	__u32 off = ETH_HLEN;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		__be16 *inner = data + off + 2;
		if ((void *)(inner + 1) > data_end)
			return;
		proto = *inner;
		off += 4;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > data_end)
			return;
		p->family = 6;
		p->proto = ip6->nexthdr;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		/* the L4 right after the fixed header, as Hubble decodes a drop's packet (gopacket stops
		 * at an extension header): ports and TCP flags, or the ICMPv6 type and code */
		__u8 *l4 = (void *)(ip6 + 1);
		if ((ip6->nexthdr == IPPROTO_TCP || ip6->nexthdr == IPPROTO_UDP) && (void *)(l4 + 4) <= data_end) {
			p->sport = *(__be16 *)l4;
			p->dport = *(__be16 *)(l4 + 2);
			if (ip6->nexthdr == IPPROTO_TCP && (void *)(l4 + 14) <= data_end)
				p->tcp_flags = l4[13];
		} else if (ip6->nexthdr == IPPROTO_ICMPV6 && (void *)(l4 + 2) <= data_end) {
			p->icmp_type = l4[0];
			p->icmp_code = l4[1];
		}
		return;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return;
	struct iphdr *ip = data + off;
	if ((void *)(ip + 1) > data_end)
		return;
	p->family = 4;
	p->proto = ip->protocol;
	__builtin_memcpy(p->saddr, &ip->saddr, 4);
	__builtin_memcpy(p->daddr, &ip->daddr, 4);
	__be16 *ports = (void *)(ip + 1);
	if (ip->ihl == 5 && (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) &&
	    (void *)(ports + 2) <= data_end) {
		p->sport = ports[0];
		p->dport = ports[1];
	}
}

static __always_inline __u32 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	return (sum & 0xffff) + (sum >> 16);
}

/* Ones' complement sum of the 20-byte IPv4 header (0xffff, with the options' words added, when
 * the checksum holds). */
static __always_inline __u32 ipv4_hdr_sum(const struct iphdr *ip)
{
	const __u16 *w = (const void *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return sum;
}

/* IPv4 options walk, one option per bpf_loop step (verified once, whatever the options). */
struct opt_walk {
	__u8 buf[64]; /* the options; indexes are masked to the buffer for the verifier */
	__u32 i;
	__u32 olen;
	__u32 bad;
	__u32 pad;
};

static long opt_step(__u32 n, void *ctx)
{
	struct opt_walk *w = ctx;
	__u32 i = w->i;
	if (i >= w->olen || i >= 40)
		return 1;
	asm volatile("" : "+r"(i)); /* keeps clang from dropping the masks */
	__u8 t = w->buf[i & 63];
	if (t == IPOPT_END)
		return 1;
	if (t == IPOPT_NOOP) {
		w->i = i + 1;
		return 0;
	}
	__u32 l = w->buf[(i + 1) & 63];
	if (l < 2 || i + l > w->olen || t == IPOPT_LSRR || t == IPOPT_SSRR) {
		w->bad = 1;
		return 1;
	}
	w->i = i + l;
	return 0;
}

/* Options (rare): copied to the stack, summed into the checksum, and walked. They must be well
 * formed and must not route the packet (LSRR/SSRR would let the node forward it to an address
 * policy never saw). Returns 0 when the header is valid. A global function: verified once. */
__noinline int ipv4_options_check(struct __sk_buff *skb, __u32 ihl, __u32 sum)
{
	struct opt_walk w = {};
	__u32 olen = ihl - sizeof(struct iphdr);
	asm volatile("" : "+r"(olen));
	olen &= 63; /* the bound the verifier needs, on the register the helper gets */
	if (olen < 4 || olen > 40)
		return -1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr), w.buf, olen))
		return -1;
	const __u16 *words = (const void *)w.buf;
#pragma unroll
	for (int i = 0; i < 20; i++)
		sum += words[i]; /* bytes past olen are zero */
	if (csum_fold(sum) != 0xffff)
		return -1;
	w.olen = olen;
	bpf_loop(40, opt_step, &w, 0);
	return w.bad ? -1 : 0;
}

/* A malformed IPv4 packet's ports, when they can be read, for its drop event (not trusted). */
static __always_inline int bad_ipv4(struct iphdr *ip, void *data_end, struct pkt *p, int reason)
{
	__u32 ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip) || ihl > 60)
		ihl = sizeof(*ip);
	__be16 *ports = (void *)ip + ihl;
	if ((ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) && !(ip->frag_off & bpf_htons(0x1fff)) &&
	    (void *)(ports + 2) <= data_end) {
		p->sport = ports[0];
		p->dport = ports[1];
	}
	return -reason;
}

/* ---- IPv6 ---- */

static __always_inline int ipv6_enabled(void)
{
	__u32 z = 0;
	struct dp_config *conf = bpf_map_lookup_elem(&mb_config, &z);
	return conf && (conf->flags & DP_F_IPV6);
}

/* ::ffff:a.b.c.d — an IPv4 address in IPv6 clothing: never a pod's, never policed as IPv6. */
static __always_inline int ipv6_is_v4mapped(const __u8 *a)
{
	const __u32 *w = (const void *)a;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int ipv6_is_linklocal(const __u8 *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

/* Extension headers membrane does not walk (authentication, no next header, mobility, HIP,
 * shim6, experimental): the packet is dropped, never guessed at. */
static __always_inline int ipv6_ext_unsupported(__u8 nh)
{
	return nh == NEXTHDR_AUTH || nh == NEXTHDR_NONE || nh == NEXTHDR_MOBILITY || nh == NEXTHDR_HIP ||
	       nh == NEXTHDR_SHIM6 || nh == NEXTHDR_EXP1 || nh == NEXTHDR_EXP2;
}

/* Neighbour discovery (RS/RA/NS/NA) that stays on the link: hop limit 255 (a router would have
 * decremented it, RFC 4861 §7.1) and a link-local source or destination, or a link-scope
 * multicast destination (never forwarded). Anything else with an ND type is plain ICMPv6, for
 * policy to decide. */
static __always_inline int ipv6_is_link_nd(const struct ipv6hdr *ip6, __u8 type)
{
	if (type < ICMPV6_RS || type > ICMPV6_NA || ip6->hop_limit != 255)
		return 0;
	const __u8 *s = (const void *)&ip6->saddr, *d = (const void *)&ip6->daddr;
	return ipv6_is_linklocal(s) || ipv6_is_linklocal(d) || (d[0] == 0xff && (d[1] & 0x0f) == 0x02);
}

#define IPV6_EXT_MAX 6 /* hop-by-hop, destination, routing, fragment, destination + one spare */

/* An IPv6 packet (the frame's headers read with bpf_skb_load_bytes: linear or not). It passes
 * only when the kernel would accept it too: version 6, payload length within the frame, no
 * IPv4-mapped address, extension headers walked (at most IPV6_EXT_MAX; hop-by-hop only first;
 * a routing header only with no segments left, since source routing would let the packet
 * reach an address policy never saw; one fragment header; anything else that is an extension
 * header: 156), and an L4 header inside the payload as for IPv4 (later fragments may not
 * overlap a TCP header). Returns PARSE_OK, PARSE_ND or a negative drop reason. A global
 * function: verified once. */
__noinline int parse_ipv6(struct __sk_buff *skb, struct pkt *p)
{
	if (!p)
		return -DROP_INVALID;
	struct ipv6hdr ip6;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
		return -DROP_INVALID;
	p->family = 6;
	p->proto = ip6.nexthdr;
	__builtin_memcpy(p->saddr, &ip6.saddr, 16);
	__builtin_memcpy(p->daddr, &ip6.daddr, 16);
	if (ip6.version != 6)
		return -DROP_INVALID;
	if (ipv6_is_v4mapped(p->saddr) || ipv6_is_v4mapped(p->daddr))
		return -DROP_INVALID;
	__u32 avail = skb->len - ETH_HLEN - sizeof(ip6);
	__u32 plen = bpf_ntohs(ip6.payload_len);
	if (plen == 0 && skb->gso_size)
		plen = avail; /* BIG TCP: the length is in the skb */
	if (plen > avail)
		return -DROP_INVALID;
	__u32 end = sizeof(ip6) + plen; /* offsets from the IPv6 header */
	__u32 off = sizeof(ip6);
	__u8 nh = ip6.nexthdr;
	__u8 seen_frag = 0;
	int i;
#pragma unroll
	for (i = 0; i < IPV6_EXT_MAX; i++) {
		if (nh != NEXTHDR_HOP && nh != NEXTHDR_ROUTING && nh != NEXTHDR_DEST && nh != NEXTHDR_FRAGMENT)
			break;
		if (nh == NEXTHDR_HOP && i != 0)
			return -DROP_INVALID_EXTHDR;
		__u8 eh[8];
		if (off + 8 > end || bpf_skb_load_bytes(skb, ETH_HLEN + off, eh, 8))
			return -DROP_INVALID_EXTHDR;
		if (nh == NEXTHDR_FRAGMENT) {
			if (seen_frag)
				return -DROP_INVALID_EXTHDR;
			seen_frag = 1;
			__u32 fo = ((__u32)eh[2] << 8) | eh[3];
			__u32 foff = fo & 0xfff8;
			__builtin_memcpy(&p->ip_id, eh + 4, 2);
			__builtin_memcpy(&p->ip_id_lo, eh + 6, 2);
			off += 8;
			nh = eh[0];
			if (foff) {
				/* a later fragment: its payload is not a header chain; the
				 * first fragment's entry gives it ports (or it is dropped) */
				p->frag = FRAG_LATER;
				p->proto = nh;
				p->l4_off = (__u16)(ETH_HLEN + off);
				if (foff + (end - off) > 65535)
					return -DROP_INVALID;
				if (nh == IPPROTO_TCP && foff < 16)
					return -DROP_INVALID;
				return PARSE_OK;
			}
			if (fo & 1)
				p->frag = FRAG_FIRST;
			continue;
		}
		if (nh == NEXTHDR_ROUTING && eh[3] != 0)
			return -DROP_INVALID_EXTHDR;
		off += ((__u32)eh[1] + 1) * 8;
		nh = eh[0];
	}
	if (nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_DEST || nh == NEXTHDR_FRAGMENT ||
	    ipv6_ext_unsupported(nh))
		return -DROP_INVALID_EXTHDR;
	if (off > end)
		return -DROP_INVALID_EXTHDR;
	p->proto = nh;
	p->l4_off = (__u16)(ETH_HLEN + off);
	__u32 l4len = end - off;
	__u32 l4 = ETH_HLEN + off;
	if (nh == IPPROTO_TCP) {
		struct tcphdr th;
		if (l4len < sizeof(th) || bpf_skb_load_bytes(skb, l4, &th, sizeof(th)))
			return -DROP_CT_INVALID_HDR;
		p->sport = th.source;
		p->dport = th.dest;
		p->tcp_flags = ((__u8 *)&th)[13];
		p->policy_port = th.dest;
		__u32 doff = th.doff * 4;
		if (doff < sizeof(th) || doff > l4len)
			return -DROP_CT_INVALID_HDR;
	} else if (nh == IPPROTO_UDP) {
		struct udphdr uh;
		if (l4len < sizeof(uh) || bpf_skb_load_bytes(skb, l4, &uh, sizeof(uh)))
			return -DROP_CT_INVALID_HDR;
		p->sport = uh.source;
		p->dport = uh.dest;
		p->policy_port = uh.dest;
		__u32 ulen = bpf_ntohs(uh.len);
		if (ulen < sizeof(uh) || (p->frag == FRAG_NONE && ulen > l4len))
			return -DROP_CT_INVALID_HDR;
	} else if (nh == IPPROTO_ICMPV6) {
		__u8 ih[8];
		if (l4len < sizeof(ih) || bpf_skb_load_bytes(skb, l4, ih, sizeof(ih)))
			return -DROP_CT_INVALID_HDR;
		p->icmp_type = ih[0];
		p->icmp_code = ih[1];
		p->policy_port = bpf_htons((__u16)ih[0]);
		if (ih[0] == ICMPV6_ECHO_REQUEST)
			__builtin_memcpy(&p->sport, ih + 4, 2);
		else if (ih[0] == ICMPV6_ECHO_REPLY)
			__builtin_memcpy(&p->dport, ih + 4, 2);
		else if (p->frag == FRAG_NONE && !seen_frag && ipv6_is_link_nd(&ip6, ih[0]))
			return PARSE_ND;
	}
	return PARSE_OK;
}

/* One parsing pass over the linear data. Returns PARSE_* or a negative drop reason. A global
 * function: verified once, not at every call site. */
__noinline int parse_l3(struct __sk_buff *skb, struct pkt *p)
{
	if (!p)
		return -DROP_INVALID;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	p->len = skb->len;
#ifdef MB_L3_DEVICE
	/* an L3 device (WireGuard's): no link header, the protocol is the skb's (bpf/wireguard.bpf.c) */
	p->ethertype = (__be16)skb->protocol;
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return PARSE_OTHER;
	struct iphdr *ip = data;
#else
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return short_read(skb, ETH_HLEN, DROP_UNKNOWN_L3);
	p->ethertype = eth->h_proto;
	/* The kernel takes one VLAN tag out of the frame before tc: a frame that had one is tagged. */
	if (skb->vlan_present) {
		peek_tagged(data, data_end, p, eth->h_proto);
		return PARSE_OTHER;
	}
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return PARSE_ARP;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6) && ipv6_enabled())
		return parse_ipv6(skb, p);
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		peek_tagged(data, data_end, p, eth->h_proto);
		return PARSE_OTHER;
	}
	struct iphdr *ip = (void *)(eth + 1);
#endif
	if ((void *)(ip + 1) > data_end)
		return short_read(skb, ETH_HLEN + sizeof(*ip), DROP_INVALID);
	p->family = 4;
	p->proto = ip->protocol;
	__builtin_memcpy(p->saddr, &ip->saddr, 4);
	__builtin_memcpy(p->daddr, &ip->daddr, 4);
	if (ip->version != 4)
		return bad_ipv4(ip, data_end, p, DROP_INVALID);
	__u32 ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return bad_ipv4(ip, data_end, p, DROP_INVALID);
	if ((void *)ip + ihl > data_end)
		return short_read(skb, ETH_HLEN + ihl, DROP_INVALID);
	__u32 sum = ipv4_hdr_sum(ip);
	if (ihl == sizeof(*ip)) {
		if (csum_fold(sum) != 0xffff)
			return bad_ipv4(ip, data_end, p, DROP_INVALID);
	} else if (ipv4_options_check(skb, ihl, sum)) {
		return bad_ipv4(ip, data_end, p, DROP_INVALID);
	}
	__u32 avail = skb->len - ETH_HLEN;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (tot == 0 && skb->gso_size)
		tot = avail; /* BIG TCP: the length is in the skb */
	if (tot < ihl || tot > avail)
		return bad_ipv4(ip, data_end, p, DROP_INVALID);
	__u16 fo = bpf_ntohs(ip->frag_off);
	if (fo & 0x8000) /* reserved bit */
		return bad_ipv4(ip, data_end, p, DROP_INVALID);
	p->ip_id = ip->id;
	p->l4_off = (__u16)(ETH_HLEN + ihl);
	__u32 foff = (__u32)(fo & 0x1fff) * 8;
	__u32 l4len = tot - ihl;
	if (foff) {
		p->frag = FRAG_LATER;
		if (foff + l4len > 65535)
			return bad_ipv4(ip, data_end, p, DROP_INVALID);
		/* a later fragment that reaches into the TCP header (flags, ports) would rewrite
		 * what policy saw in the first one */
		if (p->proto == IPPROTO_TCP && foff < 16)
			return bad_ipv4(ip, data_end, p, DROP_INVALID);
		return PARSE_OK;
	}
	if (fo & 0x2000)
		p->frag = FRAG_FIRST;
	void *l4 = (void *)ip + ihl;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end)
			return l4len < sizeof(*th) ? bad_ipv4(ip, data_end, p, DROP_CT_INVALID_HDR) :
						      short_read(skb, ETH_HLEN + ihl + sizeof(*th), DROP_CT_INVALID_HDR);
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		p->policy_port = th->dest;
		__u32 doff = th->doff * 4;
		if (l4len < sizeof(*th) || doff < sizeof(*th) || doff > l4len)
			return -DROP_CT_INVALID_HDR;
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > data_end)
			return l4len < sizeof(*uh) ? bad_ipv4(ip, data_end, p, DROP_CT_INVALID_HDR) :
						      short_read(skb, ETH_HLEN + ihl + sizeof(*uh), DROP_CT_INVALID_HDR);
		p->sport = uh->source;
		p->dport = uh->dest;
		p->policy_port = uh->dest;
		__u32 ulen = bpf_ntohs(uh->len);
		/* a whole datagram's length fits its packet (a first fragment's need not) */
		if (l4len < sizeof(*uh) || ulen < sizeof(*uh) || (p->frag == FRAG_NONE && ulen > l4len))
			return -DROP_CT_INVALID_HDR;
	} else if (p->proto == IPPROTO_ICMP) {
		struct icmphdr *ih = l4;
		if (l4len < sizeof(*ih))
			return -DROP_CT_INVALID_HDR;
		if ((void *)(ih + 1) > data_end)
			return short_read(skb, ETH_HLEN + ihl + sizeof(*ih), DROP_CT_INVALID_HDR);
		p->icmp_type = ih->type;
		p->icmp_code = ih->code;
		p->policy_port = bpf_htons((__u16)ih->type);
		if (ih->type == ICMP_ECHO) {
			p->sport = ih->un.echo.id;
		} else if (ih->type == ICMP_ECHOREPLY) {
			p->dport = ih->un.echo.id;
		} else if (is_icmp_error(ih->type) && p->frag == FRAG_NONE) {
			/* The quoted packet: an error relates only when its inner header parses;
			 * otherwise it is ICMP like any other and policy decides by type. */
			struct iphdr *in = (void *)(ih + 1);
			if ((void *)(in + 1) > data_end)
				return l4len >= sizeof(*ih) + sizeof(*in) ?
					       short_read(skb, ETH_HLEN + ihl + sizeof(*ih) + sizeof(*in),
							  DROP_CT_INVALID_HDR) :
					       PARSE_OK;
			__u32 in_ihl = in->ihl * 4;
			if (in->version != 4 || in_ihl < sizeof(*in) ||
			    l4len < sizeof(*ih) + in_ihl + 8)
				return PARSE_OK;
			__u8 *il4 = (__u8 *)in + in_ihl;
			if ((void *)(il4 + 8) > data_end)
				return short_read(skb, ETH_HLEN + ihl + sizeof(*ih) + in_ihl + 8,
						  DROP_CT_INVALID_HDR);
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
			p->is_icmp_err = 1;
		}
	}
	return PARSE_OK;
}

/* Parses `skb` into `p` (zeroed by the caller); pulls non-linear headers once. Returns PARSE_OK,
 * PARSE_ARP, PARSE_OTHER or a negative drop reason. */
static __always_inline int parse_pkt(struct __sk_buff *skb, struct pkt *p)
{
	int r = parse_l3(skb, p);
	if (r != PARSE_PULL)
		return r;
	if (bpf_skb_pull_data(skb, skb->len < PARSE_PULL_LEN ? skb->len : PARSE_PULL_LEN))
		return -DROP_INVALID;
	__builtin_memset(p, 0, sizeof(*p));
	r = parse_l3(skb, p);
	return r == PARSE_PULL ? -DROP_CT_INVALID_HDR : r;
}
