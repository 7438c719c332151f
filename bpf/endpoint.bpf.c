// SPDX-License-Identifier: GPL-2.0
/* Endpoint programs for a pod's HOST-SIDE veth:
 *   from_container: tcx/tc INGRESS of the host veth = packets the pod sends (egress policy)
 *   to_container:   tcx/tc EGRESS of the host veth  = packets delivered to the pod (ingress policy)
 * and for the node's network devices (world, underlay):
 *   from_network:   tcx/tc INGRESS = packets arriving from outside the node's pods
 * Per packet: parse -> endpoint config -> (source validation) -> service DNAT -> conntrack ->
 * ipcache -> policy (new connections only) -> pass | drop (reason) | steer to the L7 proxy.
 *
 * Ingress policy of a LOCAL destination endpoint is decided where the packet enters the node
 * (the source pod's from_container, or from_network), like Cilium's local delivery, because
 * bpf_sk_assign (L7 redirect) only works on the receive path. The destination's conntrack entry
 * is created there with CT_F_PREDECIDED; to_container then only traces. Anything not decided
 * upstream (no entry) is still decided at to_container (fail closed). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/parse.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/lb.h"

static __always_inline int do_drop(const struct pkt *p, const struct ev_ctx *c, __u8 reason, __u8 dir)
{
	stat_inc(STAT_DROP);
	emit_event(p, c, EV_DROP, reason, 0, -(__s32)reason, 0, 0, dir);
	return TC_ACT_SHOT;
}

/* Steers a packet to the local L7 proxy listening in slot `slot` (fails closed). */
static __always_inline int proxy_steer(struct __sk_buff *skb, const struct pkt *p, __u16 slot)
{
	struct bpf_sock *sk;
	long ret;
	if (p->proto == IPPROTO_TCP) {
		struct bpf_sock_tuple t = {};
		__builtin_memcpy(&t.ipv4.saddr, p->saddr, 4);
		__builtin_memcpy(&t.ipv4.daddr, p->daddr, 4);
		t.ipv4.sport = p->sport;
		t.ipv4.dport = p->dport;
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (sk) {
			if (sk->state != BPF_TCP_LISTEN) {
				ret = bpf_sk_assign(skb, sk, 0);
				bpf_sk_release(sk);
				goto out;
			}
			bpf_sk_release(sk);
		}
	}
	/* A proxy listens per transport: UDP listeners sit PROXY_UDP_SLOT_OFFSET slots above the
	 * TCP ones, and a socket of the wrong protocol is never assigned (fail closed). */
	__u32 key = slot + (p->proto == IPPROTO_UDP ? PROXY_UDP_SLOT_OFFSET : 0);
	sk = bpf_map_lookup_elem(&mb_proxy_socks, &key);
	if (!sk)
		return DROP_PROXY_LOOKUP_FAILED;
	if (sk->protocol != p->proto) {
		bpf_sk_release(sk);
		return DROP_PROXY_LOOKUP_FAILED;
	}
	ret = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
out:
	if (ret)
		return DROP_PROXY_ASSIGN_FAILED;
	skb->mark = MARK_MAGIC_TO_PROXY;
	stat_inc(STAT_PROXY_REDIRECT);
	return 0;
}


/* Ingress policy of local endpoint `dcfg` for a new connection from `src_identity`, decided
 * before the packet reaches the endpoint's veth. Events carry the destination endpoint and the
 * INGRESS direction, as if to_container had decided. Returns 0 (allowed; ir->proxy_port != 0
 * when the packet was steered to the ingress proxy) or -1 (dropped, events emitted). */
static __always_inline int ingress_decide(struct __sk_buff *skb, const struct pkt *p,
					  const struct ep_config *dcfg, __u32 src_identity,
					  struct policy_result *ir)
{
	struct ev_ctx dc = {};
	dc.ifindex = dcfg->ifindex;
	dc.ep_id = dcfg->ep_id;
	dc.src_identity = src_identity;
	dc.dst_identity = dcfg->identity;
	dc.direction = DIR_INGRESS;
	__u8 dd = dcfg->flags & EP_F_DENY_INGRESS;
	__u8 proto = p->proto;
	__be16 port = p->policy_port;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP)
		port = 0;
	stat_inc(STAT_INGRESS_EARLY);
	policy_lookup(dcfg->ep_id, DIR_INGRESS, dd, src_identity, proto, port, ir);
	if (ir->drop) {
		emit_event(p, &dc, EV_POLICY_VERDICT, 0, CT_NEW, -(__s32)ir->drop, ir->match_type,
			   ir->auth_type, DIR_INGRESS);
		do_drop(p, &dc, ir->drop, DIR_INGRESS);
		return -1;
	}
	if (ir->proxy_port) {
		int d;
		if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
			d = DROP_PROXY_UNSUPPORTED;
		else
			d = proxy_steer(skb, p, ir->proxy_slot);
		if (d) {
			emit_event(p, &dc, EV_POLICY_VERDICT, 0, CT_NEW, -(__s32)d, ir->match_type,
				   ir->auth_type, DIR_INGRESS);
			do_drop(p, &dc, d, DIR_INGRESS);
			return -1;
		}
	}
	if (dd || ir->match_type)
		emit_event(p, &dc, EV_POLICY_VERDICT, 0, CT_NEW, ir->proxy_port, ir->match_type,
			   ir->auth_type, DIR_INGRESS);
	return 0;
}

/* The destination endpoint of a packet if it is local and attached (ipcache ep id -> config). */
static __always_inline struct ep_config *local_dest(const struct pkt *p)
{
	struct ipcache_val *iv = ipcache_lookup(p->daddr);
	if (!iv || !iv->ep_id)
		return 0;
	__u32 id = iv->ep_id;
	return bpf_map_lookup_elem(&mb_ep_ids, &id);
}

static __always_inline int handle(struct __sk_buff *skb, const __u8 dir)
{
	const int from = dir == DIR_EGRESS;
	const __u8 obs = from ? TRACE_FROM_ENDPOINT : TRACE_TO_ENDPOINT;
	struct pkt p = {};
	struct ev_ctx c = {};
	stat_inc(from ? STAT_PKTS_FROM : STAT_PKTS_TO);

	int r = parse_pkt(skb, &p);
	if (r == PARSE_PASS) {
		stat_inc(STAT_NON_IPV4);
		return TC_ACT_OK;
	}
	__u32 ifindex = skb->ifindex;
	c.ifindex = ifindex;
	c.direction = dir;
	struct ep_config *cfg = bpf_map_lookup_elem(&mb_endpoints, &ifindex);
	if (!cfg)
		return do_drop(&p, &c, DROP_EP_NOT_READY, dir);
	c.ep_id = cfg->ep_id;
	if (r < 0)
		return do_drop(&p, &c, (__u8)(-r), dir);

	if (from) {
		c.src_identity = cfg->identity;
		if (__builtin_memcmp(p.saddr, cfg->ipv4, 4) != 0)
			return do_drop(&p, &c, DROP_INVALID_SIP, dir);
	} else {
		c.dst_identity = cfg->identity;
	}

	__u64 now = bpf_ktime_get_ns();
	__u16 rev_nat = 0;
	if (from && !p.is_icmp_err && (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP)) {
		int d = lb4_xlate(skb, &p, cfg->ep_id, now, &rev_nat);
		if (d) {
			c.dst_identity = ipcache_identity(p.daddr);
			return do_drop(&p, &c, d, dir);
		}
	}

	struct ct_key k;
	struct ct_val *v = 0;
	int ct = ct_lookup(&p, cfg->ep_id, dir, now, &k, &v);
	const __u8 *remote_addr = from ? p.daddr : p.saddr;

	if (ct != CT_NEW && v) {
		int trace;
		int reason = ct;
		if (ct == CT_RELATED) {
			stat_inc(STAT_CT_RELATED);
			trace = 1;
		} else {
			trace = ct_update(v, &p, ct == CT_REPLY, now);
			if (ct == CT_ESTABLISHED && (v->state & CT_F_PREDECIDED)) {
				/* first packet of a connection whose ingress was decided upstream */
				v->state &= ~CT_F_PREDECIDED;
				trace = 1;
				reason = CT_NEW;
				stat_inc(STAT_CT_NEW);
			} else {
				stat_inc(ct == CT_REPLY ? STAT_CT_REPLY : STAT_CT_ESTABLISHED);
			}
		}
		if (ct == CT_ESTABLISHED && v->proxy_port && from) {
			int d = proxy_steer(skb, &p, v->proxy_slot);
			if (d) {
				if (from)
					c.dst_identity = ipcache_identity(remote_addr);
				return do_drop(&p, &c, d, dir);
			}
		}
		__u16 rn = (!from && ct == CT_REPLY) ? v->rev_nat : 0;
		if (trace) {
			if (from)
				c.dst_identity = ipcache_identity(remote_addr);
			else
				c.src_identity = ipcache_identity(remote_addr);
			emit_event(&p, &c, EV_TRACE, obs, reason, 0, 0, 0, dir);
		}
		if (rn && (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP) && lb4_rev_nat(skb, &p, rn))
			return do_drop(&p, &c, DROP_INVALID, dir);
		if (!from && ct == CT_RELATED && v->rev_nat && lb4_rev_nat_icmp(skb, &p, v->rev_nat))
			return do_drop(&p, &c, DROP_INVALID, dir);
		stat_inc(STAT_PASS);
		return TC_ACT_OK;
	}

	/* New connection (or an unrelated ICMP error): policy. */
	__u32 remote = ipcache_identity(remote_addr);
	if (from)
		c.dst_identity = remote;
	else
		c.src_identity = remote;
	if (!from && (skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_PROXY_INGRESS && !p.is_icmp_err) {
		/* upstream connection of the ingress proxy: policy was enforced by the proxy */
		if (ct_create(&k, &p, dir, cfg->ep_id, now, c.src_identity, 0, 0, 0, 0) != 0)
			return do_drop(&p, &c, DROP_CT_CREATE_FAILED, dir);
		stat_inc(STAT_CT_NEW);
		emit_event(&p, &c, EV_TRACE, obs, CT_NEW, 0, 0, 0, dir);
		stat_inc(STAT_PASS);
		return TC_ACT_OK;
	}
	struct policy_result pr;
	__u8 dd = cfg->flags & (from ? EP_F_DENY_EGRESS : EP_F_DENY_INGRESS);
	__u8 proto = p.proto;
	__be16 port = p.policy_port;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP)
		port = 0;
	policy_lookup(cfg->ep_id, dir, dd, remote, proto, port, &pr);
	if (pr.drop) {
		emit_event(&p, &c, EV_POLICY_VERDICT, 0, CT_NEW, -(__s32)pr.drop, pr.match_type,
			   pr.auth_type, dir);
		return do_drop(&p, &c, pr.drop, dir);
	}
	if (pr.proxy_port) {
		int d;
		if (!from)
			d = DROP_PROXY_UNSUPPORTED; /* not decided upstream: bpf_sk_assign can't work here */
		else if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
			d = DROP_PROXY_UNSUPPORTED;
		else
			d = proxy_steer(skb, &p, pr.proxy_slot);
		if (d) {
			emit_event(&p, &c, EV_POLICY_VERDICT, 0, CT_NEW, -(__s32)d, pr.match_type,
				   pr.auth_type, dir);
			return do_drop(&p, &c, d, dir);
		}
	}
	/* Like Cilium's policy-verdict log filter: a direction without enforcement (no default deny,
	 * no matching entry) decides nothing, so it reports no verdict. */
	if (dd || pr.match_type)
		emit_event(&p, &c, EV_POLICY_VERDICT, 0, CT_NEW, pr.proxy_port, pr.match_type,
			   pr.auth_type, dir);

	/* Local destination: its ingress policy now (local delivery), unless the egress proxy takes
	 * the connection (the proxy's own upstream connection is decided on its way in). */
	__u16 proxy_port = pr.proxy_port, proxy_slot = pr.proxy_slot;
	struct ep_config *dcfg = 0;
	if (from && !p.is_icmp_err && !pr.proxy_port)
		dcfg = local_dest(&p);
	if (dcfg) {
		struct policy_result ir;
		if (ingress_decide(skb, &p, dcfg, cfg->identity, &ir) < 0)
			return TC_ACT_SHOT;
		proxy_port = ir.proxy_port;
		proxy_slot = ir.proxy_slot;
		if (!ir.proxy_port) {
			/* record the decision at the destination (best effort: without the entry,
			 * to_container decides again) */
			struct ct_key dk;
			ct_create(&dk, &p, DIR_INGRESS, dcfg->ep_id, now, cfg->identity, 0, 0, 0,
				  CT_F_PREDECIDED);
		}
	}
	if (!p.is_icmp_err) {
		if (ct_create(&k, &p, dir, cfg->ep_id, now, c.src_identity, proxy_port, proxy_slot,
			      rev_nat, 0) != 0)
			return do_drop(&p, &c, DROP_CT_CREATE_FAILED, dir);
		stat_inc(STAT_CT_NEW);
	}
	emit_event(&p, &c, EV_TRACE, obs, CT_NEW, 0, 0, 0, dir);
	stat_inc(STAT_PASS);
	return TC_ACT_OK;
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

/* True when a socket of this namespace owns the packet's connection: the reply of an L7 proxy's
 * transparent upstream connection (bound to a pod's address). Such packets are delivered to the
 * socket (mark 0x200 -> local route), never policed as new connections to the pod. */
static __always_inline int local_socket_owns(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_sock_tuple t = {};
	__builtin_memcpy(&t.ipv4.saddr, p->saddr, 4);
	__builtin_memcpy(&t.ipv4.daddr, p->daddr, 4);
	t.ipv4.sport = p->sport;
	t.ipv4.dport = p->dport;
	struct bpf_sock *sk;
	int own = 0;
	if (p->proto == IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (sk) {
			own = sk->state != BPF_TCP_LISTEN;
			bpf_sk_release(sk);
		}
	} else if (p->proto == IPPROTO_UDP) {
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (sk) {
			__be32 peer;
			__builtin_memcpy(&peer, p->saddr, 4);
			/* connected sockets only (a wildcard listener matches any address) */
			own = sk->dst_ip4 == peer && (__u16)sk->dst_port == p->sport;
			bpf_sk_release(sk);
		}
	}
	return own;
}

/* tc INGRESS of a network device (world, underlay): new connections to a local endpoint get its
 * ingress policy decided here (drops, L7 redirect to the ingress proxy); everything else passes
 * untouched (routing, to_container and replies are not this program's business). */
SEC("tc")
int from_network(struct __sk_buff *skb)
{
	struct pkt p = {};
	stat_inc(STAT_PKTS_NET);
	if (parse_pkt(skb, &p) != PARSE_OK || p.is_icmp_err)
		return TC_ACT_OK;
	struct ep_config *dcfg = local_dest(&p);
	if (!dcfg)
		return TC_ACT_OK;
	__u64 now = bpf_ktime_get_ns();
	struct ct_key k;
	struct ct_val *v = 0;
	int ct = ct_lookup(&p, dcfg->ep_id, DIR_INGRESS, now, &k, &v);
	if (ct != CT_NEW && v) {
		if (ct == CT_ESTABLISHED && v->proxy_port) {
			/* redirected connection: to_container never sees it, keep its entry alive */
			ct_update(v, &p, 0, now);
			int d = proxy_steer(skb, &p, v->proxy_slot);
			if (d) {
				struct ev_ctx dc = {};
				dc.ifindex = dcfg->ifindex;
				dc.ep_id = dcfg->ep_id;
				dc.src_identity = ipcache_identity(p.saddr);
				dc.dst_identity = dcfg->identity;
				dc.direction = DIR_INGRESS;
				return do_drop(&p, &dc, d, DIR_INGRESS);
			}
		}
		return TC_ACT_OK;
	}
	if (skb->mark & MARK_MAGIC_MASK)
		return TC_ACT_OK;
	if (local_socket_owns(skb, &p)) {
		skb->mark = MARK_MAGIC_TO_PROXY;
		return TC_ACT_OK;
	}
	__u32 src_identity = ipcache_identity(p.saddr);
	struct policy_result ir;
	if (ingress_decide(skb, &p, dcfg, src_identity, &ir) < 0)
		return TC_ACT_SHOT;
	if (ct_create(&k, &p, DIR_INGRESS, dcfg->ep_id, now, src_identity, ir.proxy_port,
		      ir.proxy_slot, 0, ir.proxy_port ? 0 : CT_F_PREDECIDED) != 0 &&
	    ir.proxy_port) {
		struct ev_ctx dc = {};
		dc.ifindex = dcfg->ifindex;
		dc.ep_id = dcfg->ep_id;
		dc.src_identity = src_identity;
		dc.dst_identity = dcfg->identity;
		dc.direction = DIR_INGRESS;
		return do_drop(&p, &dc, DROP_CT_CREATE_FAILED, DIR_INGRESS);
	}
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
