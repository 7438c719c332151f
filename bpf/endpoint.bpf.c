// SPDX-License-Identifier: GPL-2.0
/* Endpoint programs for a pod's HOST-SIDE veth:
 *   from_container: tcx/tc INGRESS of the host veth = packets the pod sends (egress policy)
 *   to_container:   tcx/tc EGRESS of the host veth  = packets delivered to the pod (ingress policy)
 * and for the node's network devices (world, underlay):
 *   from_network:   tcx/tc INGRESS = packets arriving from outside the node's pods
 * Per packet: parse and validate (what is not parsed is dropped) -> endpoint config -> source
 * validation -> fragment ports -> service DNAT -> conntrack -> policy for every packet that is
 * not a reply -> pass | drop (reason) | steer to the L7 proxy.
 *
 * Ingress policy of a LOCAL destination endpoint is decided where the packet enters the node
 * (the source pod's from_container, or from_network), like Cilium's local delivery, because
 * bpf_sk_assign (L7 redirect) only works on the receive path. The destination's conntrack entry
 * is created there with CT_F_PREDECIDED; to_container traces it as NEW once. Anything not decided
 * upstream (no entry) is still decided at to_container (fail closed).
 *
 * Policy applies to every packet of a connection that is not a reply or a related ICMP error,
 * as in Cilium: an entry caches the policy revision its forward direction was last allowed at,
 * and the agent bumps the revision after every policy, ipcache or endpoint change, so the next
 * packet of every connection is decided again (egress, ingress, and the ingress of a local
 * destination decided at the source, L7-redirected connections included). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/frag.h"
#include "lib/lb.h"
#include "lib/overlay.h"
#include "lib/encrypt.h"

static __always_inline int do_drop(const struct pkt *p, const struct ev_ctx *c, __u8 reason, __u8 dir)
{
	stat_inc(STAT_DROP);
	emit_event(p, c, EV_DROP, reason, 0, -(__s32)reason, 0, 0, dir);
	return TC_ACT_SHOT;
}

static __always_inline __u32 policy_rev(void)
{
	__u32 z = 0;
	struct dp_config *conf = bpf_map_lookup_elem(&mb_config, &z);
	return conf ? conf->policy_rev : 0;
}

/* Completes an endpoint hook's event context with the remote peer: its identity, and the sender
 * whose budget the events spend (from_container: the endpoint itself; to_container: the local
 * endpoint that sent the packet, or the endpoint's external budget). */
static __always_inline void ctx_remote(struct ev_ctx *c, struct remote *rm, int from, const __u8 *addr,
				       __u8 fam)
{
	remote_resolve(rm, addr, fam);
	if (from) {
		c->dst_identity = rm->identity;
	} else {
		c->src_identity = rm->identity;
		c->bucket = rm->ep_id ? SENDER_OWN(rm->ep_id) : SENDER_EXT(c->ep_id);
	}
}

/* The socket-lookup tuple of a packet, by its family (the one home of the family switch for proxy
 * steering and socket ownership): an IPv6 packet's addresses and ports already have the layout of
 * bpf_sock_tuple.ipv6 at the start of struct pkt, so they are looked up in place (no copy on the
 * stack: the steering path runs four calls deep within the verifier's 512 bytes); an IPv4 one is
 * packed into `t4`. Returns the tuple and its size for the lookup helpers. */
struct sk_tuple4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};
_Static_assert(__builtin_offsetof(struct pkt, saddr) == __builtin_offsetof(struct bpf_sock_tuple, ipv6.saddr) &&
	       __builtin_offsetof(struct pkt, daddr) == __builtin_offsetof(struct bpf_sock_tuple, ipv6.daddr) &&
	       __builtin_offsetof(struct pkt, sport) == __builtin_offsetof(struct bpf_sock_tuple, ipv6.sport) &&
	       __builtin_offsetof(struct pkt, dport) == __builtin_offsetof(struct bpf_sock_tuple, ipv6.dport),
	       "struct pkt starts with bpf_sock_tuple.ipv6's layout");
_Static_assert(sizeof(struct sk_tuple4) == sizeof(((struct bpf_sock_tuple *)0)->ipv4), "sk_tuple4 is bpf_sock_tuple.ipv4");

static __always_inline struct bpf_sock_tuple *sk_tuple_of(const struct pkt *p, struct sk_tuple4 *t4, __u32 *size)
{
	if (p->family == 6) {
		*size = sizeof(((struct bpf_sock_tuple *)0)->ipv6);
		return (struct bpf_sock_tuple *)(void *)p;
	}
	__builtin_memcpy(&t4->saddr, p->saddr, 4);
	__builtin_memcpy(&t4->daddr, p->daddr, 4);
	t4->sport = p->sport;
	t4->dport = p->dport;
	*size = sizeof(*t4);
	return (struct bpf_sock_tuple *)(void *)t4;
}

#define AF_INET_ 2
#define AF_INET6_ 10

/* Steers a packet to the local L7 proxy listening in slot `slot` (fails closed). A connection
 * the proxy already accepted goes to its socket; a new one to the listener of the packet's
 * transport and family (a socket of another protocol or family is never assigned). */
static __noinline int proxy_steer(struct __sk_buff *skb, const struct pkt *p, __u16 slot)
{
	struct bpf_sock *sk;
	long ret;
	if (p->proto == IPPROTO_TCP) {
		struct sk_tuple4 t4;
		__u32 ts;
		struct bpf_sock_tuple *t = sk_tuple_of(p, &t4, &ts);
		sk = bpf_skc_lookup_tcp(skb, t, ts, BPF_F_CURRENT_NETNS, 0);
		if (sk) {
			if (sk->state != BPF_TCP_LISTEN) {
				ret = bpf_sk_assign(skb, sk, 0);
				bpf_sk_release(sk);
				goto out;
			}
			bpf_sk_release(sk);
		}
	}
	/* UDP listeners sit PROXY_UDP_SLOT_OFFSET slots above the TCP ones, IPv6 listeners
	 * PROXY_V6_SLOT_OFFSET above the IPv4 ones (src/common/proxy-ports.ts). */
	__u32 key = slot + (p->proto == IPPROTO_UDP ? PROXY_UDP_SLOT_OFFSET : 0) +
		    (p->family == 6 ? PROXY_V6_SLOT_OFFSET : 0);
	sk = bpf_map_lookup_elem(&mb_proxy_socks, &key);
	if (!sk)
		return DROP_PROXY_LOOKUP_FAILED;
	if (sk->protocol != p->proto || sk->family != (p->family == 6 ? AF_INET6_ : AF_INET_)) {
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

/* Event context of local endpoint `dcfg`'s ingress, for a packet whose events spend `bucket`. */
static __always_inline void ingress_ctx(struct ev_ctx *dc, const struct ep_config *dcfg,
					__u32 src_identity, __u32 bucket, __u64 now)
{
	dc->ifindex = dcfg->ifindex;
	dc->ep_id = dcfg->ep_id;
	dc->src_identity = src_identity;
	dc->dst_identity = dcfg->identity;
	dc->direction = DIR_INGRESS;
	dc->pad = 0;
	dc->bucket = bucket;
	dc->now = now;
}

/* Ingress policy of local endpoint `dcfg` for a new connection, decided before the packet
 * reaches the endpoint's veth; `dc` is the destination's ingress event context (ingress_ctx: the
 * source identity, the sender's budget), so events carry the destination endpoint and the
 * INGRESS direction, as if to_container had decided. Returns 0 (allowed; ir->proxy_port != 0
 * when the packet was steered to the ingress proxy) or -1 (dropped, events emitted). */
static __noinline int ingress_decide(struct __sk_buff *skb, const struct pkt *p,
				     const struct ep_config *dcfg, const struct ev_ctx *dc,
				     struct policy_result *ir)
{
	const __u32 src_identity = dc->src_identity;
	stat_inc(STAT_INGRESS_EARLY);
	policy_lookup(dcfg->ep_id, DIR_INGRESS, dcfg->flags, src_identity, p->proto, policy_port_of(p), ir);
	policy_audit(ir, dcfg->flags);
	if (ir->drop) {
		emit_event(p, dc, EV_POLICY_VERDICT, 0, CT_NEW, -(__s32)ir->drop, ir->match_type,
			   ir->auth_type, DIR_INGRESS);
		do_drop(p, dc, ir->drop, DIR_INGRESS);
		return -1;
	}
	if (ir->proxy_port) {
		int d;
		if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
			d = DROP_PROXY_UNSUPPORTED;
		else
			d = proxy_steer(skb, p, ir->proxy_slot);
		if (d) {
			emit_event(p, dc, EV_POLICY_VERDICT, 0, CT_NEW, -(__s32)d, ir->match_type,
				   ir->auth_type, DIR_INGRESS);
			do_drop(p, dc, d, DIR_INGRESS);
			return -1;
		}
	}
	if (ir->default_deny || ir->match_type || ir->audited)
		emit_event_f(p, dc, EV_POLICY_VERDICT, 0, CT_NEW, ir->proxy_port, ir->match_type,
			     ir->auth_type, DIR_INGRESS, ir->audited ? EV_F_AUDITED : 0);
	return 0;
}

/* Ingress policy of local endpoint `dcfg` for a packet of an established connection, decided
 * at the source. Returns 0 (allowed; ir->proxy_port set when policy redirects) or -1 (dropped,
 * a drop event at the destination's ingress). */
static __always_inline int ingress_recheck(const struct pkt *p, const struct ep_config *dcfg,
					   __u32 src_identity, __u32 bucket, __u64 now, struct policy_result *ir)
{
	stat_inc(STAT_POLICY_RECHECK);
	policy_lookup(dcfg->ep_id, DIR_INGRESS, dcfg->flags, src_identity,
		      p->proto, policy_port_of(p), ir);
	policy_audit(ir, dcfg->flags);
	if (!ir->drop)
		return 0;
	struct ev_ctx dc;
	ingress_ctx(&dc, dcfg, src_identity, bucket, now);
	do_drop(p, &dc, ir->drop, DIR_INGRESS);
	return -1;
}

/* Per-packet state of an endpoint hook, shared with its subprograms (which keep their own
 * locals off the program's stack frame). */
struct hctx {
	struct pkt p;
	struct ev_ctx c;
	struct remote rm;
	struct ep_config *cfg;
	void *own;  /* the endpoint's own conntrack table */
	void *create_tbl; /* new connection: the table of its entry (NULL: no entry) */
	struct ct_new n;  /* new connection: its entry */
	__u32 rev;  /* policy revision at the start of the packet */
	__u32 conf_flags;  /* mb_config's DP_F_* */
	__u16 dest_ep; /* from_container: the local destination whose ingress was decided here */
	__u8 dir;
	__u8 mon_agg;      /* MON_AGG_* */
	__u16 mon_interval_s;
	__u8 trace_out;    /* from_container: the packet is traced where it leaves (its reason + 1) */
	__u8 local_ep;     /* from_container: judged for a local destination decided here (MARK_MAGIC_LOCAL_EP) */
	__u8 reply_local;  /* from_container: a reply conntrack says no node socket owns (to h->rm) */
	__u8 ct_new;       /* ep_ingress_known: conntrack knows no entry of the packet at the endpoint */
};

/* What the hook reads of mb_config once per packet: the policy revision, monitor aggregation. */
static __always_inline void hctx_config(struct hctx *h)
{
	__u32 z = 0;
	struct dp_config *conf = bpf_map_lookup_elem(&mb_config, &z);
	if (conf) {
		h->rev = conf->policy_rev;
		h->conf_flags = conf->flags;
		h->mon_agg = conf->monitor_aggregation;
		h->mon_interval_s = conf->monitor_interval_s;
	}
	if (!h->mon_interval_s)
		h->mon_interval_s = MON_REPORT_INTERVAL_S;
}

static __always_inline const __u8 *remote_of(const struct hctx *h)
{
	return h->dir == DIR_EGRESS ? h->p.daddr : h->p.saddr;
}

static __always_inline int hdrop(struct hctx *h, __u8 reason)
{
	ctx_remote(&h->c, &h->rm, h->dir == DIR_EGRESS, remote_of(h), h->p.family);
	return do_drop(&h->p, &h->c, reason, h->dir);
}

/* Conntrack lookup of the hook's packet (a subprogram: the keys stay off the program's frame).
 * At to_container a packet marked MARK_MAGIC_LOCAL_EP is first looked for as a forward packet of
 * the sender the mark names, in that sender's table (where the entry of a connection decided at
 * its source lives), or with sender 0 (from_overlay's hint) in the endpoint's CT_EXT table (where
 * the entry of a connection from outside the node's endpoints lives): one lookup. Only an entry
 * there counts; a miss takes the full lookup. */
static __noinline int hctx_lookup(struct hctx *h, struct ct_val **out, __u32 mark)
{
	struct ct_key k;
	const struct pkt *p = &h->p;
	if (h->dir == DIR_INGRESS && (mark & MARK_MAGIC_MASK) == MARK_MAGIC_LOCAL_EP && !p->is_icmp_err) {
		ct_key_fill(&k, p->saddr, p->daddr, p->sport, p->dport, p->proto, p->family, DIR_INGRESS,
			    h->cfg->ep_id);
		const __u32 sender = mark >> 16;
		struct ct_val *v = ct_get(ct_table(sender ? CT_OWN(sender) : CT_EXT(h->cfg->ep_id)), &k, h->c.now);
		if (v) {
			stat_inc(STAT_CT_HINTED);
			*out = v;
			return CT_ESTABLISHED;
		}
		/* sender 0 and a source already resolved as no local endpoint (the hooks where packets
		 * enter the node): the full lookup would look for a reply in the endpoint's own table
		 * and then for this same key in this same table again; the first half is enough */
		if (!sender && h->rm.known && !h->rm.ep_id) {
			ct_key_fill(&k, p->daddr, p->saddr, p->dport, p->sport, p->proto, p->family, DIR_EGRESS,
				    h->cfg->ep_id);
			v = ct_get(h->own, &k, h->c.now);
			*out = v;
			return v ? CT_REPLY : CT_NEW;
		}
	}
	return ct_lookup(p, h->own, h->cfg->ep_id, h->dir, &h->rm, remote_of(h), h->c.now, &k, out);
}

/* Per-packet policy for a forward (non-reply) packet of an established connection at an
 * endpoint hook: decided again when the entry's revision is stale. A redirect policy now
 * requires is applied to the rest of the connection (as in Cilium: the proxy has no socket
 * for it and resets it); a connection already on a proxy stays there. Returns 0 (pass) or -1
 * (dropped, events emitted). */
static __noinline int ct_recheck(struct __sk_buff *skb, struct hctx *h, struct ct_val *v)
{
	const struct pkt *p = &h->p;
	const int from = h->dir == DIR_EGRESS;
	if (v->pol_rev == h->rev)
		return 0;
	/* upstream connection of the ingress proxy: the proxy enforces this endpoint's policy */
	if (!from && (skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_PROXY_INGRESS)
		return 0;
	stat_inc(STAT_POLICY_RECHECK);
	ctx_remote(&h->c, &h->rm, from, remote_of(h), h->p.family);
	struct ep_config *cfg = h->cfg;
	struct policy_result pr;
	policy_lookup(cfg->ep_id, h->dir, cfg->flags, h->rm.identity, p->proto, policy_port_of(p), &pr);
	policy_audit(&pr, cfg->flags);
	if (pr.drop) {
		do_drop(p, &h->c, pr.drop, h->dir);
		return -1;
	}
	__u16 pp = pr.proxy_port, ps = pr.proxy_slot;
	if (pp && !from) {
		/* not decided upstream: bpf_sk_assign cannot work here */
		do_drop(p, &h->c, DROP_PROXY_UNSUPPORTED, h->dir);
		return -1;
	}
	if (from && !pp && h->rm.ep_id) {
		__u32 id = h->rm.ep_id;
		struct ep_config *dcfg = bpf_map_lookup_elem(&mb_ep_ids, &id);
		if (dcfg) {
			struct policy_result ir;
			if (ingress_recheck(p, dcfg, cfg->identity, h->c.bucket, h->c.now, &ir) < 0)
				return -1;
			pp = ir.proxy_port;
			ps = ir.proxy_slot;
		}
	}
	if (pp) {
		v->proxy_port = pp;
		v->proxy_slot = ps;
	}
	v->pol_rev = h->rev;
	return 0;
}

/* A packet conntrack found (established, reply, related): per-packet policy for forward
 * packets, steering of redirected connections, traces, reverse NAT. */
static __noinline int handle_known(struct __sk_buff *skb, struct hctx *h, struct ct_val *v, int ct)
{
	struct pkt *p = &h->p;
	const int from = h->dir == DIR_EGRESS;
	int trace;
	int reason = ct;
	if (ct == CT_RELATED) {
		stat_inc(STAT_CT_RELATED);
		trace = 1;
	} else if (ct == CT_REPLY) {
		trace = ct_update(v, p, 1, h->c.now, h->mon_interval_s);
		stat_inc(STAT_CT_REPLY);
	} else {
		if (!from && (skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_PROXY_INGRESS)
			v->state |= CT_F_PROXY_UPSTREAM;
		if (ct_recheck(skb, h, v) < 0)
			return TC_ACT_SHOT;
		trace = ct_update(v, p, 0, h->c.now, h->mon_interval_s);
		if (v->state & CT_F_PREDECIDED) {
			/* first packet of a connection whose ingress was decided upstream */
			v->state &= ~CT_F_PREDECIDED;
			trace = 1;
			reason = CT_NEW;
			stat_inc(STAT_CT_NEW);
		} else {
			stat_inc(STAT_CT_ESTABLISHED);
		}
		if (v->proxy_port && from) {
			int d = proxy_steer(skb, p, v->proxy_slot);
			if (d)
				return hdrop(h, d);
		} else if (from && v->dest_ep) {
			h->local_ep = 1;
			h->dest_ep = v->dest_ep;
		}
	}
	__u16 rn = (!from && ct == CT_REPLY) ? v->rev_nat : 0;
	__u16 rn_icmp = (!from && ct == CT_RELATED) ? v->rev_nat : 0;
	/* monitor aggregation: medium traces what conntrack reports, low every packet; a packet
	 * leaving its endpoint is traced where it leaves (handle: trace_out) */
	if (trace || h->mon_agg != MON_AGG_MEDIUM) {
		ctx_remote(&h->c, &h->rm, from, remote_of(h), h->p.family);
		if (from)
			h->trace_out = (__u8)reason + 1;
		else
			emit_event(p, &h->c, EV_TRACE, TRACE_TO_ENDPOINT, reason, 0, 0, 0, h->dir);
	}
	if (rn && (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) &&
	    (p->family == 6 ? lb6_rev_nat(skb, p, rn) : lb4_rev_nat(skb, p, rn)))
		return hdrop(h, DROP_INVALID);
	/* ICMP errors relate over IPv4 only (parse.h): ICMPv6 is decided by policy by type */
	if (rn_icmp && p->family == 4 && lb4_rev_nat_icmp(skb, p, rn_icmp))
		return hdrop(h, DROP_INVALID);
	return TC_ACT_OK;
}

/* A new connection (or an unrelated ICMP error, or a later fragment without an entry): policy.
 * Returns TC_ACT_OK with the entries to create in h->n / h->create_tbl / h->dest_ep (the caller
 * creates them: conntrack entries only for packets that parsed as well formed and are allowed),
 * or TC_ACT_SHOT (dropped, events emitted). */
static __noinline int handle_new(struct __sk_buff *skb, struct hctx *h, __u16 rev_nat)
{
	struct pkt *p = &h->p;
	struct ep_config *cfg = h->cfg;
	const int from = h->dir == DIR_EGRESS;
	ctx_remote(&h->c, &h->rm, from, remote_of(h), h->p.family);
	void *tbl = from ? h->own : ct_table(ct_ingress_idx(cfg->ep_id, h->rm.ep_id));
	h->create_tbl = (!p->is_icmp_err && p->frag != FRAG_LATER) ? tbl : 0;
	h->n.src_identity = h->c.src_identity;
	h->n.pol_rev = h->rev;
	h->n.dir = h->dir;
	h->n.ep_id = cfg->ep_id;
	/* upstream connection of the ingress proxy: policy was enforced by the proxy */
	if (!from && (skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_PROXY_INGRESS && !p->is_icmp_err) {
		h->n.state = CT_F_PROXY_UPSTREAM;
		return TC_ACT_OK;
	}
	struct policy_result pr;
	policy_lookup(cfg->ep_id, h->dir, cfg->flags, h->rm.identity, p->proto, policy_port_of(p), &pr);
	policy_audit(&pr, cfg->flags);
	if (pr.drop) {
		emit_event(p, &h->c, EV_POLICY_VERDICT, 0, CT_NEW, -(__s32)pr.drop, pr.match_type,
			   pr.auth_type, h->dir);
		return do_drop(p, &h->c, pr.drop, h->dir);
	}
	if (pr.proxy_port) {
		int d;
		if (!from)
			d = DROP_PROXY_UNSUPPORTED; /* not decided upstream: bpf_sk_assign can't work here */
		else if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
			d = DROP_PROXY_UNSUPPORTED;
		else
			d = proxy_steer(skb, p, pr.proxy_slot);
		if (d) {
			emit_event(p, &h->c, EV_POLICY_VERDICT, 0, CT_NEW, -(__s32)d, pr.match_type,
				   pr.auth_type, h->dir);
			return do_drop(p, &h->c, d, h->dir);
		}
	}
	/* Like Cilium's policy-verdict log filter: a direction without enforcement (no default deny,
	 * no matching entry) decides nothing, so it reports no verdict. */
	if (pr.default_deny || pr.match_type || pr.audited)
		emit_event_f(p, &h->c, EV_POLICY_VERDICT, 0, CT_NEW, pr.proxy_port, pr.match_type,
			     pr.auth_type, h->dir, pr.audited ? EV_F_AUDITED : 0);
	h->n.proxy_port = pr.proxy_port;
	h->n.proxy_slot = pr.proxy_slot;
	h->n.rev_nat = rev_nat;
	h->n.dest_ep = 0;

	/* Local destination: its ingress policy now (local delivery), unless the egress proxy takes
	 * the connection (the proxy's own upstream connection is decided on its way in). */
	if (from && !p->is_icmp_err && !pr.proxy_port && h->rm.ep_id) {
		__u32 id = h->rm.ep_id;
		struct ep_config *dcfg = bpf_map_lookup_elem(&mb_ep_ids, &id);
		if (dcfg) {
			struct policy_result ir;
			struct ev_ctx dc;
			ingress_ctx(&dc, dcfg, cfg->identity, h->c.bucket, h->c.now);
			if (ingress_decide(skb, p, dcfg, &dc, &ir) < 0)
				return TC_ACT_SHOT;
			h->n.proxy_port = ir.proxy_port;
			h->n.proxy_slot = ir.proxy_slot;
			if (!ir.proxy_port) {
				h->dest_ep = dcfg->ep_id;
				/* the egress entry names it: the connection's later packets are marked */
				h->n.dest_ep = dcfg->ep_id;
			}
		}
	}
	return TC_ACT_OK;
}

/* Creates the entries handle_new decided on and traces the new connection. */
static __always_inline int create_new(struct hctx *h)
{
	if (h->create_tbl) {
		int d = ct_create(h->create_tbl, &h->p, &h->n, h->c.now);
		if (d)
			return do_drop(&h->p, &h->c, d, h->dir);
		stat_inc(STAT_CT_NEW);
		if (h->dest_ep) {
			/* record the decision at the destination, in this sender's table (best
			 * effort: without the entry, to_container decides again) */
			h->n.src_identity = h->cfg->identity;
			h->n.state = CT_F_PREDECIDED;
			h->n.dir = DIR_INGRESS;
			h->n.ep_id = h->dest_ep;
			h->n.rev_nat = 0;
			h->n.dest_ep = 0;
			if (!ct_create(h->own, &h->p, &h->n, h->c.now))
				h->local_ep = 1;
		}
	}
	/* A new connection is traced once per node: at the local destination's to_container when its
	 * ingress was decided here, else where it leaves the node (handle: trace_out) or is delivered */
	if (h->dir == DIR_EGRESS)
		h->trace_out = h->dest_ep ? 0 : CT_NEW + 1;
	else
		emit_event(&h->p, &h->c, EV_TRACE, TRACE_TO_ENDPOINT, CT_NEW, 0, 0, 0, h->dir);
	return TC_ACT_OK;
}

/* `addr` (family `fam`) is the endpoint's own address of that family (an endpoint without an IPv6
 * address has none: a link-local or any other is not its). */
static __always_inline int ep_addr_is(const struct ep_config *cfg, const __u8 *addr, __u8 fam)
{
	const __u32 *a = (const void *)cfg->ipv6, *s = (const void *)addr;
	if (fam == 4)
		return s[0] == *(const __u32 *)(const void *)cfg->ipv4;
	if ((a[0] | a[1] | a[2] | a[3]) == 0)
		return 0;
	return ((a[0] ^ s[0]) | (a[1] ^ s[1]) | (a[2] ^ s[2]) | (a[3] ^ s[3])) == 0;
}

/* The packet's source is the endpoint's own address of its family (spoof check). */
static __always_inline int source_valid(const struct pkt *p, const struct ep_config *cfg)
{
	return ep_addr_is(cfg, p->saddr, p->family);
}

/* True when a socket of this namespace owns the packet's connection: the reply of an L7 proxy's
 * transparent upstream connection (bound to a pod's address). Such packets are delivered to the
 * socket (mark 0x200 -> local route), never policed as new connections to the pod. */
static __always_inline int local_socket_owns(struct __sk_buff *skb, const struct pkt *p)
{
	struct sk_tuple4 t4;
	__u32 ts;
	struct bpf_sock_tuple *t = sk_tuple_of(p, &t4, &ts);
	struct bpf_sock *sk;
	int own = 0;
	if (p->proto == IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(skb, t, ts, BPF_F_CURRENT_NETNS, 0);
		if (sk) {
			own = sk->state != BPF_TCP_LISTEN;
			bpf_sk_release(sk);
		}
	} else if (p->proto == IPPROTO_UDP) {
		sk = bpf_sk_lookup_udp(skb, t, ts, BPF_F_CURRENT_NETNS, 0);
		if (sk) {
			/* connected sockets only (a wildcard listener matches any address) */
			if (p->family == 6) {
				const __u32 *s = (const void *)p->saddr;
				own = sk->dst_ip6[0] == s[0] && sk->dst_ip6[1] == s[1] && sk->dst_ip6[2] == s[2] &&
				      sk->dst_ip6[3] == s[3];
			} else {
				__be32 peer;
				__builtin_memcpy(&peer, p->saddr, 4);
				own = sk->dst_ip4 == peer;
			}
			own = own && (__u16)sk->dst_port == p->sport;
			bpf_sk_release(sk);
		}
	}
	return own;
}

#ifndef MB_L3_DEVICE
/* The WireGuard peer a pod's IPv4 packet for `daddr` goes to, as Cilium's
 * wg_maybe_redirect_to_encrypt decides it (the destination's ipcache entry and its node's key), no
 * FIB lookup: a remote endpoint's entry names its node (tunnel endpoint), and that node is a peer
 * this node sends through cilium_wg0 (mb_wg_peers) whose allowed IPs hold `daddr`: its pod CIDR,
 * or its own InternalIP with node encryption (ENCRYPT_F_NODE). The network order InternalIP, or 0:
 * a local endpoint, an address no ipcache entry puts behind a node (the world, a pod not known
 * yet), a node without a key, the device down; the stack routes those as before (a keyed peer's
 * pod CIDR through cilium_wg0, the rest to the underlay, where strict mode drops what it must). */
static __always_inline __be32 wg_peer_for(__be32 daddr, __u32 flags)
{
	const struct ipcache_val *v = ipcache_lookup((const __u8 *)&daddr);
	__be32 ep = 0;
	if (!v || v->ep_id)
		return 0;
	__builtin_memcpy(&ep, v->tunnel_endpoint, 4);
	if (!ep)
		return 0;
	const struct wg_peer *w = bpf_map_lookup_elem(&mb_wg_peers, &ep);
	if (!w)
		return 0;
	if (daddr == ep)
		return (flags & ENCRYPT_F_NODE) ? ep : 0;
	return (daddr & w->pod_mask) == w->pod_net ? ep : 0;
}

/* The IPv4 packet of the hook's frame with `grow` bytes of encapsulation in front of it fits
 * cilium_wg0 `wg` (an L3 device: its MTU is all of it); a GSO skb is segmented to the MTU on the
 * way, as the stack's forwarding (and the FIB lookup's check this replaces) lets it through. A
 * packet no longer than MB_MIN_MTU fits any device, decided without the helper's device lookup. */
static __always_inline int wg_fits(struct __sk_buff *skb, __u32 wg, __s32 grow)
{
	if ((__s64)skb->len + grow <= ETH_HLEN + MB_MIN_MTU)
		return 1;
	__u32 mtu = 0;
	return bpf_check_mtu(skb, wg, &mtu, grow - ETH_HLEN, 0) == BPF_MTU_CHK_RET_SUCCESS;
}

/* What wg_vxlan_redirect puts between a pod frame's link header and its IPv4 header: the outer
 * IPv4 and UDP headers, VXLAN's, and the inner frame's link header. */
struct wg_vxlan_hdr {
	struct iphdr ip;
	struct udphdr udp;
	__u8 vx[8];
	struct ethhdr eth;
} __attribute__((packed));
_Static_assert(sizeof(struct wg_vxlan_hdr) == 50, "VXLAN's 50 bytes");
#define WG_VXLAN_NOT_HERE (-1)

/* Routing mode tunnel with WireGuard: the VXLAN of a judged pod packet (TTL already decremented)
 * for tunnel endpoint `ep`, made here and handed to cilium_wg0 `wg` directly, as the VXLAN device
 * would make it (outer IPv4 from this node's InternalIP `src` to `ep`, UDP to 8472 with no
 * checksum, the sender's identity in the VNI, the pod frame's own link header inside) and the node
 * would route it: no trip through cilium_vxlan, its route lookup (a tunnel key defeats the route
 * cache), the host's output path and netfilter, ~6 µs a packet here. Only for a keyed peer
 * (mb_wg_peers, whose entries the agent keeps with the routes of table 2005 that its rule
 * `ipproto udp dport 8472 lookup 2005` sends the VXLAN to: no FIB lookup) and a packet that fits
 * cilium_wg0 with VXLAN's 50 bytes: a peer without a key keeps the VXLAN device's path to the
 * underlay, where strict mode sees it. A GSO skb keeps its segment size (cilium_wg0's MTU has
 * VXLAN's 50 bytes on top of the pod's) and becomes a UDP tunnel GSO skb, which cilium_wg0
 * segments as it segments the VXLAN device's. WG_VXLAN_NOT_HERE, nothing changed, else the verdict
 * (TC_ACT_SHOT: half rewritten, never passed on). */
static __always_inline int wg_vxlan_redirect(struct __sk_buff *skb, __be32 ep, __u32 wg, __be32 src, __u32 identity)
{
	struct wg_vxlan_hdr h = {};
	if (skb->protocol != bpf_htons(ETH_P_IP) || !bpf_map_lookup_elem(&mb_wg_peers, &ep) ||
	    !wg_fits(skb, wg, sizeof(h)) || bpf_skb_load_bytes(skb, 0, &h.eth, sizeof(h.eth)))
		return WG_VXLAN_NOT_HERE;
	/* the VXLAN device's source port: from the flow's hash, in the local port range */
	const __u16 sport = 32768 + (__u16)(((__u64)bpf_get_hash_recalc(skb) * (61000 - 32768)) >> 32);
	const __u32 len = skb->len - ETH_HLEN + sizeof(h); /* the outer IPv4 packet */
	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.tot_len = bpf_htons(len > 0xffff ? 0xffff : len); /* a GSO skb's segments get their own */
	h.ip.ttl = 64;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.saddr = src;
	h.ip.daddr = ep;
	__u32 sum = (__u32)bpf_csum_diff(0, 0, (__be32 *)(void *)&h.ip, sizeof(h.ip), 0);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	h.ip.check = (__u16)~sum;
	h.udp.source = bpf_htons(sport);
	h.udp.dest = bpf_htons(TUNNEL_PORT);
	h.udp.len = bpf_htons((len - sizeof(h.ip)) > 0xffff ? 0xffff : len - sizeof(h.ip));
	h.vx[0] = 0x08; /* I: the VNI is valid */
	h.vx[4] = (__u8)(identity >> 16);
	h.vx[5] = (__u8)(identity >> 8);
	h.vx[6] = (__u8)identity;
	h.eth.h_proto = bpf_htons(ETH_P_IP);
	/* a failed room change changes nothing */
	if (bpf_skb_adjust_room(skb, sizeof(h), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
					BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN)))
		return WG_VXLAN_NOT_HERE;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0))
		return TC_ACT_SHOT;
	stat_inc(STAT_OVERLAY_REDIRECT);
	/* an L3 device: the kernel takes the outer link header off on the way */
	return bpf_redirect(wg, 0);
}
#endif

/* A judged pod packet the node routes into the tunnel goes there directly (lib/overlay.h), unless a
 * socket of the node owns its connection: a reply to an L7 proxy's transparent upstream socket
 * (bound to a remote client's address) is the proxy's, as the stack's socket match would find.
 * With WireGuard, its VXLAN goes into cilium_wg0 from here (wg_vxlan_redirect). */
static __noinline int tunnel_redirect(struct __sk_buff *skb, const struct pkt *p, __u32 identity, int sk_check)
{
	__u32 ov = overlay_ifindex();
	__be32 ep = overlay_tx_peer(skb, p, ov);
	if (!ep || (sk_check && local_socket_owns(skb, p)))
		return TC_ACT_OK;
	if (ipv4_dec_ttl(skb))
		return TC_ACT_OK; /* the stack answers a TTL about to expire */
#ifndef MB_L3_DEVICE
	const struct encrypt_config *ec = encrypt_config();
	if (ec && (ec->flags & ENCRYPT_F_TUNNEL) && ec->wg_ifindex && ec->node_ip) {
		const int r = wg_vxlan_redirect(skb, ep, ec->wg_ifindex, ec->node_ip, identity);
		if (r != WG_VXLAN_NOT_HERE)
			return r;
	}
#endif
	return overlay_key_redirect(skb, ep, ov, identity);
}

#ifndef MB_L3_DEVICE
/* The FIB lookup the host's forwarding would make for the IPv4 packet `ip` arriving on the hook's
 * device (native_redirect's). */
static __always_inline long fib4_lookup(struct __sk_buff *skb, const struct iphdr *ip, struct bpf_fib_lookup *fib,
					__u32 flags)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = 2; /* AF_INET */
	fib->ifindex = skb->ifindex;
	fib->tos = ip->tos;
	fib->l4_protocol = ip->protocol;
	fib->ipv4_src = ip->saddr;
	fib->ipv4_dst = ip->daddr;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), flags);
}

/* Routing mode native: a judged pod packet for a pod on another node goes to the device the node
 * routes it to directly (Cilium's BPF host routing, fib_redirect): the FIB decides as the stack
 * would (policy rules, the route to the other node's pod CIDR), the neighbour is the one the stack
 * resolved, the TTL what the forwarding would leave, and the packet goes straight to the device's
 * egress, where its programs (strict encryption's egress check) still run. What is skipped is the
 * host's IP forwarding (netfilter's forward path, the routing cache's work per packet), as on the
 * tunnel path. Only for a destination the ipcache names as a pod behind another node (its entry's
 * tunnel endpoint, not the address itself); the world, the node's own addresses, WireGuard
 * (wg_out), a neighbour not yet resolved, a frame too big, a TTL about to expire, a fragment, IPv6
 * and a connection a node socket may own (sk_check, as tunnel_redirect) keep the stack's way. */
static __noinline int native_redirect(struct __sk_buff *skb, const struct pkt *p, int sk_check)
{
	if (p->family != 4 || p->frag || wg_out_ifindex())
		return TC_ACT_OK;
	struct ipcache_val *v = ipcache_lookup(p->daddr);
	__be32 ep = 0;
	if (v)
		__builtin_memcpy(&ep, v->tunnel_endpoint, 4);
	if (!ep || v->ep_id || __builtin_memcmp(&ep, p->daddr, 4) == 0)
		return TC_ACT_OK;
	struct iphdr ip;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) || ip.ttl <= 1)
		return TC_ACT_OK;
	struct bpf_fib_lookup fib;
	/* tot_len 0: the kernel checks the skb against the device's MTU (a GSO skb by its segments) */
	if (fib4_lookup(skb, &ip, &fib, 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_OK;
	if (sk_check && local_socket_owns(skb, p))
		return TC_ACT_OK;
	__u8 macs[12];
	__builtin_memcpy(macs, fib.dmac, 6);
	__builtin_memcpy(macs + 6, fib.smac, 6);
	/* the hop the host's forwarding would have counted (the TTL is above 1: checked) */
	if (ipv4_dec_ttl(skb) || bpf_skb_store_bytes(skb, 0, macs, 12, 0))
		return TC_ACT_SHOT;
	stat_inc(STAT_NATIVE_REDIRECT);
	return bpf_redirect(fib.ifindex, 0);
}
#endif

/* The trace of a packet leaving its endpoint, where Cilium's bpf_lxc traces it: into the tunnel
 * (to-overlay), to an L7 proxy (to-proxy), to the node's stack (to-stack: another node in native
 * routing, the node itself, the world). One for a local endpoint is traced where it is delivered
 * (its to_container, Cilium's to-endpoint), never as it leaves: Cilium's from-endpoint trace is
 * one of those its monitor aggregation hides at every level above none. */
static __noinline void trace_out(struct __sk_buff *skb, struct hctx *h, int verdict)
{
	__u8 obs;
	if ((skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_TO_PROXY)
		obs = TRACE_TO_PROXY;
	else if (verdict == TC_ACT_REDIRECT && (h->conf_flags & DP_F_TUNNEL))
		obs = TRACE_TO_OVERLAY;
	else if (h->rm.ep_id)
		return;
	else
		obs = TRACE_TO_STACK;
	emit_event(&h->p, &h->c, EV_TRACE, obs, h->trace_out - 1, 0, 0, 0, DIR_EGRESS);
}

/* Delivery into a local endpoint from a tc ingress hook (Cilium's BPF host routing: redirect_ep):
 * the destination's to_container work done where the packet is, then bpf_redirect_peer, which
 * hands the packet to the endpoint's own interface in its namespace: no host IP stack, no
 * to_container, no veth backlog. One home for from_container's local delivery and
 * from_wireguard's. EP_TO_STACK: not delivered from here, nothing done; the stack forwards the
 * packet and to_container enforces, as for every packet that reaches a pod that way. */
#define EP_TO_STACK (-1)

/* A packet the host would forward to a local endpoint as it is: not a fragment nor an ICMP error
 * (reassembly and errors are the stack's), a TTL (hop limit) above 1 (the stack answers one about
 * to expire), and no bigger than the endpoint's veth takes (the stack answers that too, where
 * bpf_redirect_peer would drop it without a word). */
static __always_inline int ep_deliverable(struct __sk_buff *skb, const struct pkt *p, __u32 ifindex)
{
	__u8 ttl = 0;
	if (p->frag || p->is_icmp_err)
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + (p->family == 6 ? offsetof(struct ipv6hdr, hop_limit) :
					       offsetof(struct iphdr, ttl)), &ttl, 1) || ttl <= 1)
		return 0;
	return fits_mtu(skb, ifindex);
}

/* What endpoint `dcfg`'s to_container would do with the hook's packet (parsed in h->p; h's
 * revision, monitor settings and clock read; h->rm the source, or unknown): h becomes the
 * endpoint's ingress context, conntrack finds the connection (`hint`: the MARK_MAGIC_LOCAL_EP mark
 * to_container would read, 0: the full lookup), and handle_known applies the per-packet policy
 * when the revision moved, the traces, the counters and reverse NAT. EP_TO_STACK, with nothing
 * done, for a connection conntrack does not know (to_container decides it) or one an L7 proxy
 * takes part in; TC_ACT_SHOT when dropped (events emitted); TC_ACT_OK to deliver. */
static __always_inline int ep_ingress_known(struct __sk_buff *skb, struct hctx *h, struct ep_config *dcfg, __u32 hint)
{
	const __u16 ep = dcfg->ep_id;
	void *own = ct_table(CT_OWN(ep));
	if (!own)
		return EP_TO_STACK; /* to_container drops it (190) */
	h->dir = DIR_INGRESS;
	h->cfg = dcfg;
	h->own = own;
	h->c.ifindex = dcfg->ifindex;
	h->c.direction = DIR_INGRESS;
	h->c.ep_id = ep;
	h->c.src_identity = 0;
	h->c.dst_identity = dcfg->identity;
	h->c.bucket = SENDER_EXT(ep);
	h->trace_out = 0;
	h->local_ep = 0;
	struct ct_val *v = 0;
	int ct = hctx_lookup(h, &v, hint);
	h->ct_new = ct == CT_NEW;
	if (ct == CT_NEW || !v || v->proxy_port)
		return EP_TO_STACK;
	stat_inc(STAT_PKTS_TO);
	int verdict = handle_known(skb, h, v, ct);
	if (verdict != TC_ACT_OK)
		return verdict;
	stat_inc(STAT_PASS);
	return TC_ACT_OK;
}

/* Hands a packet ep_ingress_known passed (ep_deliverable: TTL above 1) to its endpoint's own
 * interface with the hop the host's forwarding would have counted and the link header it would
 * have written: the endpoint's MAC as destination, the router's as source (the MAC the sender
 * addressed, the node's side of its veth; zero from an L3 device, which has none, and nobody
 * reads it). A rewrite that fails part way leaves a packet neither the stack nor the pod may see:
 * dropped, with the reason. */
static __noinline int ep_deliver(struct __sk_buff *skb, struct hctx *h, __u32 stat)
{
	const struct ep_config *dcfg = h->cfg;
	/* the link header and the network header's first 12 bytes (IPv4: up to the checksum; IPv6:
	 * the hop limit is byte 7), read and written once: one store instead of a checksum helper and
	 * two stores, each of which makes the skb's head writable again */
	struct {
		struct ethhdr eth;
		__u8 l3[12];
	} __attribute__((packed)) hd;
#ifdef MB_L3_DEVICE
	if (bpf_skb_change_head(skb, sizeof(hd.eth), 0))
		return TC_ACT_OK; /* no room, nothing changed: the stack forwards it, to_container sees it again */
	if (bpf_skb_load_bytes(skb, 0, &hd, sizeof(hd)))
		return do_drop(&h->p, &h->c, DROP_INVALID, DIR_INGRESS);
	__builtin_memset(hd.eth.h_source, 0, ETH_ALEN);
	hd.eth.h_proto = h->p.family == 6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
#else
	if (bpf_skb_load_bytes(skb, 0, &hd, sizeof(hd)))
		return do_drop(&h->p, &h->c, DROP_INVALID, DIR_INGRESS);
	__builtin_memcpy(hd.eth.h_source, hd.eth.h_dest, ETH_ALEN);
#endif
	__builtin_memcpy(hd.eth.h_dest, dcfg->mac, ETH_ALEN);
	if (h->p.family == 6)
		hd.l3[offsetof(struct ipv6hdr, hop_limit)] -= 1; /* no header checksum in IPv6 */
	else
		ipv4_ttl_csum_dec(&hd.l3[offsetof(struct iphdr, ttl)]);
	if (bpf_skb_store_bytes(skb, 0, &hd, sizeof(hd), 0))
		return do_drop(&h->p, &h->c, DROP_WRITE_ERROR, DIR_INGRESS);
	stat_inc(stat);
	return bpf_redirect_peer(dcfg->ifindex, 0);
}

/* What endpoint `cfg`'s to_container would do with the hook's packet (ep_ingress_known), then
 * delivery into it (ep_deliver, counted in `stat`): the one home of the delivery of from_container,
 * from_network, from_overlay and from_wireguard. EP_TO_STACK, nothing done, or the verdict. */
static __always_inline int ep_deliver_known(struct __sk_buff *skb, struct hctx *h, struct ep_config *cfg,
					    __u32 hint, __u32 stat)
{
	int r = ep_ingress_known(skb, h, cfg, hint);
	return r == TC_ACT_OK ? ep_deliver(skb, h, stat) : r;
}

/* The config of local endpoint `peer` (the destination whose ingress was decided
 * at the source, or the local endpoint a reply returns to) when the packet may be delivered into
 * it from here, else NULL. The entry names the endpoint by id, and the packet must be for that
 * endpoint's address. One lookup: the agent's endpoint writer (src/datapath/linux/endpoints.ts)
 * keeps every mb_ep_ids entry naming a veth whose mb_endpoints entry (what to_container reads) is
 * the same endpoint's (an entry by id goes before its veth's and comes after it; a veth's ifindex
 * taken over by another endpoint loses the old id's entry first), so an id or an ifindex reused
 * after the endpoint went away delivers nothing (the stack routes the packet, to_container
 * decides). A subprogram: its keys stay off from_container's frame. */
static __noinline struct ep_config *peer_dest(struct __sk_buff *skb, const struct pkt *p, __u32 peer)
{
	struct ep_config *cfg = bpf_map_lookup_elem(&mb_ep_ids, &peer);
	if (!cfg || cfg->ep_id != peer || !ep_addr_is(cfg, p->daddr, p->family) ||
	    !ep_deliverable(skb, p, cfg->ifindex))
		return 0;
	return cfg;
}

/* from_container, a judged packet for a local endpoint: the destination whose ingress was decided
 * here (h->local_ep, h->dest_ep), or the local endpoint a reply returns to (h->reply_local,
 * h->rm): delivered from here, with the work its to_container would do done here first (Cilium's
 * BPF host routing). Else the stack's way, as before: to_container enforces there, and the mark
 * tells it the sender whose table holds the destination's entry. Returns the verdict. A
 * subprogram: from_container's frame is at the verifier's limit. */
static __noinline int peer_local(struct __sk_buff *skb, struct hctx *h)
{
	const __u32 hint = h->local_ep ? ((__u32)h->cfg->ep_id << 16) | MARK_MAGIC_LOCAL_EP : 0;
	struct ep_config *cfg = peer_dest(skb, &h->p, h->local_ep ? h->dest_ep : h->rm.ep_id);
	int r = EP_TO_STACK;
	if (cfg) {
		/* the source as to_container sees it: resolved again from the ipcache */
		h->rm.known = 0;
		r = ep_deliver_known(skb, h, cfg, hint, STAT_LOCAL_DELIVER);
	}
	if (r != EP_TO_STACK)
		return r;
	if (hint)
		skb->mark = hint;
	return TC_ACT_OK;
}

/* `sk_check` (egress): set to 0 when conntrack says no socket of the node can own the packet's
 * connection (see below), so that the tunnel's or WireGuard's hand-off skips the socket lookup; it
 * stays as the caller set it (1: look) on every other path. */
static __always_inline int handle(struct __sk_buff *skb, const __u8 dir, int *sk_check_out)
{
	const int from = dir == DIR_EGRESS;
	struct hctx h = {};
	struct pkt *p = &h.p;
	h.dir = dir;
	stat_inc(from ? STAT_PKTS_FROM : STAT_PKTS_TO);

	int r = parse_pkt(skb, p);
	if (r == PARSE_ARP) {
		stat_inc(STAT_NON_IPV4);
		return TC_ACT_OK;
	}
	if (r == PARSE_ND) {
		stat_inc(STAT_ND);
		return TC_ACT_OK;
	}
	__u32 ifindex = skb->ifindex;
	h.c.ifindex = ifindex;
	h.c.direction = dir;
	/* the revision before anything it covers (the endpoint's config, the ipcache, policy): a
	 * change between the reads then leaves the connection's entry at the older revision, decided
	 * again at its next packet; read after, the change's own revision would be cached with a
	 * verdict of the old maps */
	hctx_config(&h);
	struct ep_config *cfg = bpf_map_lookup_elem(&mb_endpoints, &ifindex);
	if (!cfg)
		return do_drop(p, &h.c, DROP_EP_NOT_READY, dir);
	h.cfg = cfg;
	const __u16 ep = cfg->ep_id;
	h.c.ep_id = ep;
	if (from) {
		h.c.src_identity = cfg->identity;
		h.c.bucket = SENDER_OWN(ep);
	} else {
		h.c.dst_identity = cfg->identity;
		h.c.bucket = SENDER_EXT(ep);
	}
	if (r != PARSE_OK) {
		if (r == PARSE_OTHER) {
			stat_inc(STAT_NON_IPV4);
			r = -DROP_UNKNOWN_L3;
		} else {
			stat_inc(STAT_MALFORMED);
		}
		/* IPv6 while disabled has no identity here (Cilium's drop says UNKNOWN_ID): the ipcache's
		 * ::/0 would name every address world */
		if (p->family == 4 || (p->family == 6 && ipv6_enabled()))
			ctx_remote(&h.c, &h.rm, from, remote_of(&h), p->family);
		return do_drop(p, &h.c, (__u8)(-r), dir);
	}
	if (from && !source_valid(p, cfg))
		return hdrop(&h, DROP_INVALID_SIP);
	if (from && is_encap(p) && tunnel_mode())
		return hdrop(&h, DROP_ENCAP_PROHIBITED);
	void *own = ct_table(CT_OWN(ep));
	if (!own)
		return hdrop(&h, DROP_CT_NO_MAP);
	h.own = own;
	h.c.now = bpf_ktime_get_ns();

	/* Fragments: state lives in the sender's table; a later fragment takes its ports from the
	 * first one (or is dropped), a passing first fragment is registered on the way out. */
	void *frag_tbl = 0;
	struct frag_reg fr = {};
	if (p->frag) {
		stat_inc(STAT_FRAGMENTS);
		if (from) {
			frag_tbl = own;
		} else {
			ctx_remote(&h.c, &h.rm, from, remote_of(&h), p->family);
			frag_tbl = ct_table(ct_ingress_idx(ep, h.rm.ep_id));
		}
		if (p->frag == FRAG_LATER && (!frag_tbl || frag_ports(frag_tbl, p, h.c.now)))
			return hdrop(&h, DROP_FRAG_NOT_FOUND);
		frag_snapshot(&fr, p);
	}

	__u16 rev_nat = 0;
	if (from && !p->is_icmp_err && (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) &&
	    !(h.conf_flags & DP_F_NO_SERVICES) && lb_maybe_frontend(p)) {
		int d = p->family == 6 ? lb6_xlate(skb, p, own, ep, &rev_nat) : lb4_xlate(skb, p, own, ep, &rev_nat);
		if (d)
			return hdrop(&h, d);
	}

	struct ct_val *v = 0;
	int ct = hctx_lookup(&h, &v, from ? 0 : skb->mark);
	int verdict;
	/* Which packets a socket of the node may own (tunnel_redirect): a new connection's, an ICMP
	 * error's, and those of a connection the ingress proxy's upstream socket or a redirect takes
	 * part in. Conntrack says the others (the endpoint's own connections, replies to peers that
	 * are not the proxy) belong to the endpoint and its peer: no socket lookup per packet. */
	int sk_check = 1;
	if (ct != CT_NEW && v) {
		verdict = handle_known(skb, &h, v, ct);
		sk_check = ct == CT_RELATED || v->proxy_port || (v->state & CT_F_PROXY_UPSTREAM);
		h.reply_local = ct == CT_REPLY && !sk_check;
	} else if ((verdict = handle_new(skb, &h, rev_nat)) == TC_ACT_OK)
		verdict = create_new(&h);
	if (verdict != TC_ACT_OK)
		return verdict;
	if (p->frag == FRAG_FIRST)
		frag_register(frag_tbl, &fr, h.c.now);
	stat_inc(STAT_PASS);
	if (!from)
		return TC_ACT_OK;
	*sk_check_out = sk_check;
	/* judged; unless a proxy takes it, a packet for a local endpoint is delivered into it from
	 * here (peer_local), one for the tunnel goes there directly */
	int local = 0;
	if (skb->mark & MARK_MAGIC_MASK)
		verdict = TC_ACT_OK;
	else if ((local = h.local_ep || (h.reply_local && h.rm.ep_id)))
		verdict = TC_ACT_OK;
	else if (h.conf_flags & DP_F_TUNNEL)
		verdict = tunnel_redirect(skb, &h.p, h.c.src_identity, sk_check);
#ifndef MB_L3_DEVICE
	else
		verdict = native_redirect(skb, &h.p, sk_check);
#endif
	if (h.trace_out)
		trace_out(skb, &h, verdict);
	return local ? peer_local(skb, &h) : verdict;
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	int sk_check = 1;
	return handle(skb, DIR_INGRESS, &sk_check);
}

/* The destination endpoint of a packet if it is local and attached (ipcache ep id -> config). */
static __always_inline struct ep_config *local_dest(const struct pkt *p)
{
	struct ipcache_val *iv = ipcache_lookup_fam(p->daddr, p->family);
	if (!iv || !iv->ep_id)
		return 0;
	__u32 id = iv->ep_id;
	return bpf_map_lookup_elem(&mb_ep_ids, &id);
}

#ifndef MB_L3_DEVICE
/* Native routing with WireGuard: a pod's packet for a keyed peer is handed to cilium_wg0 from here
 * (Cilium's wg_maybe_redirect_to_encrypt: the ipcache and the peer's key decide, wg_peer_for, no
 * FIB lookup), not forwarded by the host stack. What the agent keeps in mb_wg_peers follows the
 * routes it keeps through cilium_wg0 per keyed peer, so this sends there exactly what the node
 * would route there; the rest (a peer without a key, an address not known as a remote pod, the
 * world) keeps the stack's way, to the underlay, where strict mode sees it. Packets for a proxy
 * (marked), fragments, a TTL about to expire, a packet too big for the device, and replies that
 * belong to a local transparent socket (the ingress proxy's upstream connection, bound to the
 * remote client's address) stay with the stack. */
static __noinline int wg_out(struct __sk_buff *skb, int sk_check)
{
	const struct encrypt_config *c = encrypt_config();
	if (!c || !c->wg_ifindex || (c->flags & ENCRYPT_F_TUNNEL) || (skb->mark & MARK_MAGIC_MASK) ||
	    skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	const __u32 wg = c->wg_ifindex, flags = c->flags;
	struct iphdr ip;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) || ip.ttl <= 1 ||
	    (ip.frag_off & bpf_htons(0x3fff)))
		return TC_ACT_OK;
	if (!wg_peer_for(ip.daddr, flags) || !wg_fits(skb, wg, 0))
		return TC_ACT_OK;
	/* only where a socket of the node may own the connection (handle's sk_check: a new one, an
	 * ICMP error, a proxy's); conntrack says the rest are the pod's and its peer's, as for the
	 * tunnel (tunnel_redirect): no socket lookup per packet of an established connection */
	if (sk_check && (ip.protocol == IPPROTO_TCP || ip.protocol == IPPROTO_UDP)) {
		struct pkt p = {};
		__be16 ports[2];
		if (bpf_skb_load_bytes(skb, ETH_HLEN + (ip.ihl & 0xf) * 4, ports, sizeof(ports)))
			return TC_ACT_OK;
		p.family = 4;
		p.proto = ip.protocol;
		p.sport = ports[0];
		p.dport = ports[1];
		__builtin_memcpy(p.saddr, &ip.saddr, 4);
		__builtin_memcpy(p.daddr, &ip.daddr, 4);
		if (local_socket_owns(skb, &p))
			return TC_ACT_OK;
	}
	/* the hop the host's forwarding would have counted (the TTL is above 1: checked) */
	if (ipv4_dec_ttl(skb))
		return TC_ACT_SHOT;
	/* an L3 device: the kernel takes the link header off on the way */
	return bpf_redirect(wg, 0);
}
#endif

SEC("tc")
int from_container(struct __sk_buff *skb)
{
#ifndef MB_L3_DEVICE
	int sk_check = 1;
	int r = handle(skb, DIR_EGRESS, &sk_check);
	return r == TC_ACT_OK ? wg_out(skb, sk_check) : r;
#else
	int sk_check = 1;
	return handle(skb, DIR_EGRESS, &sk_check);
#endif
}

/* Conntrack lookup of a packet entering the node for local endpoint dc->ep_id (a subprogram: the
 * key stays off the callers' frames, which are at the verifier's 512 bytes with from_overlay's). */
static __noinline int net_ct_lookup(const struct pkt *p, void *own, const struct ev_ctx *dc,
				    struct remote *rm, struct ct_val **out)
{
	struct ct_key k;
	return ct_lookup(p, own, dc->ep_id, DIR_INGRESS, rm, p->saddr, dc->now, &k, out);
}

/* Ingress of a packet entering the node from outside its pods (a network device, or the tunnel)
 * towards a local endpoint, from a source whose identity is rm->identity: new connections get
 * the destination's ingress policy decided here (drops, L7 redirect to the ingress proxy), and
 * every later packet of a redirected one too. Anything not for a local endpoint passes untouched
 * (to_container parses and enforces every packet that reaches a pod). `*deliver`: the endpoint's
 * veth when the packet may go there directly, with DELIVER_EXT set when its connection's entry is
 * an ingress entry in the endpoint's CT_EXT table (from_overlay's hint to to_container).
 * `known_new`: the hook's delivery part (net_deliver) just looked this packet up at this endpoint,
 * in the same tables with the same keys, and found nothing: not looked up a second time. */
#define DELIVER_EXT 0x80000000u /* (ifindexes are positive ints) */
static __always_inline int net_ingress(struct __sk_buff *skb, struct pkt *p, struct remote *rm, __u32 *deliver,
				       int known_new, __u32 rev)
{
	struct ep_config *dcfg = local_dest(p);
	if (!dcfg)
		return TC_ACT_OK;
	const __u16 ep = dcfg->ep_id;
	void *own = ct_table(CT_OWN(ep));
	void *ext = ct_table(CT_EXT(ep));
	if (!own || !ext)
		return TC_ACT_OK; /* to_container drops it (190) */
	struct ev_ctx dc;
	ingress_ctx(&dc, dcfg, rm->identity, SENDER_EXT(ep), bpf_ktime_get_ns());
	struct frag_reg fr;
	if (p->frag) {
		if (p->frag == FRAG_LATER && frag_ports(ext, p, dc.now))
			return TC_ACT_OK; /* to_container drops it (175) */
		frag_snapshot(&fr, p);
	}
	struct ct_val *v = 0;
	int ct = known_new ? CT_NEW : net_ct_lookup(p, own, &dc, rm, &v);
	if (ct != CT_NEW && v) {
		if (ct == CT_ESTABLISHED && v->proxy_port) {
			/* redirected connection: to_container never sees it, so its policy is
			 * enforced here, per packet */
			if (v->pol_rev != rev) {
				struct policy_result ir;
				if (ingress_recheck(p, dcfg, rm->identity, SENDER_EXT(ep), dc.now, &ir) < 0)
					return TC_ACT_SHOT;
				if (ir.proxy_port) {
					v->proxy_port = ir.proxy_port;
					v->proxy_slot = ir.proxy_slot;
				}
				v->pol_rev = rev;
			}
			ct_update(v, p, 0, dc.now, MON_REPORT_INTERVAL_S);
			int d = proxy_steer(skb, p, v->proxy_slot);
			if (d)
				return do_drop(p, &dc, d, DIR_INGRESS);
		}
		/* (a reply of a proxied connection may be the proxy's own: the stack finds its socket) */
		if (!v->proxy_port)
			*deliver = dcfg->ifindex | (ct == CT_ESTABLISHED ? DELIVER_EXT : 0);
		goto pass;
	}
	if (p->frag == FRAG_LATER)
		return TC_ACT_OK; /* no entry for its datagram: to_container decides */
	if (skb->mark & MARK_MAGIC_MASK)
		return TC_ACT_OK;
	if (local_socket_owns(skb, p)) {
		skb->mark = MARK_MAGIC_TO_PROXY;
		return TC_ACT_OK;
	}
	struct policy_result ir;
	if (ingress_decide(skb, p, dcfg, &dc, &ir) < 0)
		return TC_ACT_SHOT;
	struct ct_new n = {};
	n.src_identity = rm->identity;
	n.pol_rev = rev;
	n.proxy_port = ir.proxy_port;
	n.proxy_slot = ir.proxy_slot;
	n.state = ir.proxy_port ? 0 : CT_F_PREDECIDED;
	n.dir = DIR_INGRESS;
	n.ep_id = ep;
	int d = ct_create(ext, p, &n, dc.now);
	if (d && ir.proxy_port)
		return do_drop(p, &dc, d, DIR_INGRESS);
	if (!ir.proxy_port)
		*deliver = dcfg->ifindex | (d ? 0 : DELIVER_EXT);
pass:
	if (p->frag == FRAG_FIRST)
		frag_register(ext, &fr, dc.now);
	return TC_ACT_OK;
}

/* Drop event of a packet entering the node (no local endpoint hook yet). A subprogram: the event
 * context stays off the callers' frames (from_overlay's parts). */
static __noinline int net_drop(struct __sk_buff *skb, const struct pkt *p, __u32 src_identity, __u8 reason, __u8 dir)
{
	struct ev_ctx sc = {};
	sc.ifindex = skb->ifindex;
	sc.src_identity = src_identity;
	sc.dst_identity = p->family == 4 || p->family == 6 ? ipcache_identity(p->daddr, p->family) : 0;
	sc.bucket = SENDER_EXT(0);
	return do_drop(p, &sc, reason, dir);
}

/* mb_config's DP_F_* */
static __always_inline __u32 dp_flags(void)
{
	__u32 z = 0;
	struct dp_config *conf = bpf_map_lookup_elem(&mb_config, &z);
	return conf ? conf->flags : 0;
}

/* tc INGRESS of a network device (world, underlay): the source identity from the ipcache. A
 * packet claiming a local endpoint's address is dropped (spoofed), and so is one claiming another
 * node's address on any device but the underlay, or a remote pod's but from its node on the
 * underlay (lib/overlay.h). What does not parse, and ICMP errors, pass. */
#ifdef MB_L3_DEVICE
/* skb->cb slot of from_wireguard's parts (there, not in a frame: their calls take the stack):
 * the VNI wg_decap took off, the source's identity; 0: not decapsulated */
#define WG_CB_VNI 0
#endif

/* The source of a packet that entered the node from outside (a network device, cilium_wg0, the
 * tunnel) from its ipcache entry `v` (0: world). The node's own addresses are the host's in the
 * ipcache, but the host's packets never enter that way, and the stack drops such a martian; the
 * deliveries from these hooks do not pass the stack. Not the host (which allow-localhost lets into
 * every endpoint): the world, as Cilium's resolve_srcid_ipv4 ignores the ipcache's host for what
 * did not come from the host. */
static __always_inline void remote_from_outside(struct remote *r, const struct ipcache_val *v)
{
	remote_from(r, v);
	if (r->identity == IDENTITY_HOST)
		r->identity = IDENTITY_WORLD;
}

/* The source checks of a packet entering the node on a network device (or cilium_wg0): rm gets
 * the source (the ipcache's identity, or `vni`, what wg_decap took off); 0, or the reason to drop
 * the packet. One home for from_network's path and its delivery (net_known). */
static __always_inline __u8 net_source_check(struct __sk_buff *skb, const struct pkt *p, struct remote *rm, __u32 vni)
{
	/* one ipcache lookup: the source's identity and whether it may arrive here */
	struct ipcache_val *sv = ipcache_lookup_fam(p->saddr, p->family);
	remote_from_outside(rm, sv);
#ifdef MB_L3_DEVICE
	/* decapsulated by from_wireguard (vni, the source's identity, as from_overlay reads it): a
	 * local endpoint's address as source is spoofed, any other is the VNI's */
	if (vni && !rm->ep_id) {
		rm->identity = vni;
		return 0;
	}
#endif
	if (rm->ep_id || net_source_spoofed(skb, p, sv))
		return DROP_INVALID_SIP;
#ifndef MB_L3_DEVICE
	/* strict ingress, native routing: a pod on another node (its ipcache entry names a node, and
	 * it is not that node's own address) reaches a local endpoint only through cilium_wg0 */
	if ((dp_flags() & DP_F_STRICT_INGRESS) && sv && sv->identity != IDENTITY_REMOTE_NODE &&
	    sv->identity != IDENTITY_HOST && *(const __u32 *)sv->tunnel_endpoint) {
		const struct ipcache_val *dv = ipcache_lookup_fam(p->daddr, p->family);
		if (dv && dv->ep_id)
			return DROP_UNENCRYPTED_TRAFFIC;
	}
#endif
	return 0;
}

static __always_inline int network_ingress(struct __sk_buff *skb, __u32 vni, int known_new)
{
	struct pkt p = {};
	struct remote rm = {};
	if (parse_pkt(skb, &p) != PARSE_OK || p.is_icmp_err)
		return TC_ACT_OK;
	/* the revision before the source's identity and the destination's config (handle's rule) */
	const __u32 rev = policy_rev();
	__u8 d = net_source_check(skb, &p, &rm, vni);
	if (d)
		return net_drop(skb, &p, vni ? vni : rm.identity, d, DIR_INGRESS);
	__u32 deliver = 0;
	return net_ingress(skb, &p, &rm, &deliver, known_new, rev);
}

/* A packet that entered the node, parsed in h->p, its source checked (h->rm: as the hook's
 * to_container stage reads it; unknown: resolved from the ipcache, as to_container does): for
 * a local endpoint and of a connection conntrack knows there, what its to_container would do,
 * then delivery into it (ep_ingress_known, ep_deliver: Cilium's BPF host routing from
 * cil_from_netdev / cil_from_overlay). The connection's entry is looked for first where one from
 * outside the node's endpoints lives (the endpoint's CT_EXT table: MARK_MAGIC_LOCAL_EP with
 * sender 0, as from_overlay's hint was), then the full lookup (a reply: the endpoint's own table).
 * TC_ACT_OK when the packet is for no local endpoint (the hook's network path would pass it
 * untouched); EP_TO_STACK, nothing done, when it is not delivered from here (the hook's network
 * path decides it); else the verdict. h's revision: read by the caller before the source's
 * identity (handle's rule). */
static __always_inline int net_deliver(struct __sk_buff *skb, struct hctx *h, __u32 stat)
{
	struct ipcache_val *dv = ipcache_lookup_fam(h->p.daddr, h->p.family);
	if (!dv || !dv->ep_id)
		return TC_ACT_OK;
	struct ep_config *cfg = peer_dest(skb, &h->p, dv->ep_id);
	if (!cfg)
		return EP_TO_STACK;
	h->c.now = bpf_ktime_get_ns();
	return ep_deliver_known(skb, h, cfg, MARK_MAGIC_LOCAL_EP, stat);
}

/* from_network's and from_wireguard's delivery part, in a frame of its own: a packet of a
 * connection conntrack knows, for a local endpoint, delivered into it (net_deliver). Not called in
 * tunnel routing for what is not decapsulated (`vni` 0: the underlay's VXLAN for cilium_vxlan,
 * whose inner packets from_overlay delivers). EP_TO_STACK, nothing done, for the rest, which
 * network_ingress judges: a source the checks refuse (network_ingress drops it), ICMP errors, fragments, a TTL about to expire, a packet too
 * big, a new connection (network_ingress decides it first), and a connection an L7 proxy takes
 * part in (its replies may belong to the proxy's transparent socket). `vni`: cilium_wg0's
 * decapsulated packet (wg_decap), 0 for the rest. cilium_wg0 delivers IPv4 only. `*ct_new` (may
 * be NULL): set when conntrack knows no entry of the packet at its local endpoint (the network
 * path need not look again: net_ingress' known_new). */
static __noinline int net_known(struct __sk_buff *skb, __u32 vni, int *ct_new)
{
	struct hctx h = {};
	if (parse_pkt(skb, &h.p) != PARSE_OK || h.p.is_icmp_err)
		return EP_TO_STACK;
	hctx_config(&h);
#ifdef MB_L3_DEVICE
	if (h.p.family != 4)
		return EP_TO_STACK;
	const __u32 stat = STAT_WG_DELIVER;
#else
	const __u32 stat = STAT_NET_DELIVER;
#endif
	if (net_source_check(skb, &h.p, &h.rm, vni))
		return EP_TO_STACK;
	int r = net_deliver(skb, &h, stat);
	if (ct_new)
		*ct_new = h.ct_new;
	return r;
}

#ifndef MB_L3_DEVICE
/* from_network's network path, in a frame of its own (net_known's is another) */
static __noinline int net_network(struct __sk_buff *skb, int known_new)
{
	return network_ingress(skb, 0, known_new);
}

/* Established connections first: one parse, one conntrack lookup, delivered from here; the rest
 * takes network_ingress, and a packet it let through for a local endpoint (a new connection it
 * just decided) is delivered from here too when it can be. */
SEC("tc")
int from_network(struct __sk_buff *skb)
{
	stat_inc(STAT_PKTS_NET);
	/* tunnel routing: other nodes' pod traffic is VXLAN here (from_overlay delivers it) */
	if (tunnel_mode())
		return net_network(skb, 0);
	int ct_new = 0;
	int r = net_known(skb, 0, &ct_new);
	if (r != EP_TO_STACK)
		return r;
	r = net_network(skb, ct_new);
	if (r != TC_ACT_OK || (skb->mark & MARK_MAGIC_MASK))
		return r; /* dropped, or steered to a socket the stack delivers to */
	r = net_known(skb, 0, 0);
	return r == EP_TO_STACK ? TC_ACT_OK : r;
}
#endif

/* from_overlay's parts, each in a frame of its own (the endpoint hook's state and net_ingress'
 * together pass the verifier's 512-byte stack). */
/* The tunnel key's checks (its key struct off ov_known's frame): 0 or a drop reason. */
static __noinline int ov_key(struct __sk_buff *skb, __u32 *identity)
{
	return overlay_src_from_key(skb, identity);
}

/* A decapsulated packet: the source identity is the VNI, once the outer source is a node and the
 * VNI an identity a node may send; the inner packet must parse (a tunnel carries pods' IPv4 and
 * IPv6 and nothing else) and may not claim a local endpoint's address. Its inner destination MAC
 * is the sender's business: the packet is the host's. Then, for a local endpoint and a
 * connection conntrack knows there, delivery into it (net_deliver). Returns the verdict, or
 * EP_TO_STACK (admitted, *identity the VNI: the network path decides it; *ct_new as net_known's). */
static __noinline int ov_known(struct __sk_buff *skb, int decrypted, __u32 *identity, int *ct_new)
{
	struct hctx h = {};
	hctx_config(&h);
	int r = parse_pkt(skb, &h.p);
	int d = ov_key(skb, identity);
	if (d)
		return net_drop(skb, &h.p, *identity, d, DIR_INGRESS);
	/* strict ingress, tunnel routing: plain VXLAN from the underlay (even from a node's address)
	 * carries no identity anyone authenticated */
	if (!decrypted && (dp_flags() & DP_F_STRICT_INGRESS))
		return net_drop(skb, &h.p, *identity, DROP_UNENCRYPTED_TRAFFIC, DIR_INGRESS);
	if (r == PARSE_OK && h.p.family != 4 && h.p.family != 6)
		r = PARSE_OTHER; /* the tunnel carries pods' IPv4 and IPv6 */
	if (r != PARSE_OK)
		return net_drop(skb, &h.p, *identity, r > 0 ? DROP_UNKNOWN_L3 : (__u8)(-r), DIR_INGRESS);
	struct ipcache_val *sv = ipcache_lookup_fam(h.p.saddr, h.p.family);
	if (sv && sv->ep_id)
		return net_drop(skb, &h.p, *identity, DROP_INVALID_SIP, DIR_INGRESS);
	bpf_skb_change_type(skb, 0 /* PACKET_HOST */);
	if (h.p.is_icmp_err)
		return TC_ACT_OK;
	/* h.rm: the source as the endpoint's to_container resolves it, from the ipcache (not the
	 * VNI: its traces and per-packet policy as before), from the lookup just made; the node's own
	 * address is the world's (remote_from_outside) */
	remote_from_outside(&h.rm, sv);
	r = net_deliver(skb, &h, STAT_OVERLAY_DELIVER);
	*ct_new = h.ct_new;
	return r;
}

/* An admitted packet the network path let through for a local endpoint (a new connection it just
 * decided): delivered from here when it can be (net_deliver), else EP_TO_STACK. */
static __noinline int ov_deliver(struct __sk_buff *skb)
{
	struct hctx h = {};
	hctx_config(&h);
	if (parse_pkt(skb, &h.p) != PARSE_OK)
		return EP_TO_STACK;
	return net_deliver(skb, &h, STAT_OVERLAY_DELIVER);
}

/* The network path of an admitted decapsulated packet: the VNI is the source identity for the
 * destination's ingress policy (as from_network's is the ipcache's). `*deliver` as net_ingress'. */
static __noinline int ov_network(struct __sk_buff *skb, __u32 identity, __u32 *deliver, int known_new)
{
	struct pkt p = {};
	struct remote rm = {};
	const __u32 rev = policy_rev();
	if (parse_pkt(skb, &p) != PARSE_OK)
		return TC_ACT_OK; /* (ov_known parsed it) */
	rm.identity = identity;
	rm.known = 1;
	return net_ingress(skb, &p, &rm, deliver, known_new, rev);
}

/* tc INGRESS of the VXLAN device: a decapsulated packet, judged (ov_known), delivered into its
 * local endpoint when conntrack knows its connection there (Cilium's BPF host routing from
 * cil_from_overlay); else the network path (ov_network: new connections, redirected ones), and
 * what it lets through for a local endpoint is delivered from here when it can be, or sent to the
 * endpoint veth's egress (to_container enforces there), or left to the stack. */
SEC("tc")
int from_overlay(struct __sk_buff *skb)
{
	__u32 identity = 0, deliver = 0;
	int ct_new = 0;
	stat_inc(STAT_OVERLAY_RX);
	/* from_wireguard's mark says the VXLAN came out of cilium_wg0; nothing after this reads it
	 * (a proxy's or the local hint's mark is set below from nothing) */
	const int decrypted = (skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_DECRYPT;
	if (decrypted)
		skb->mark = 0;
	int r = ov_known(skb, decrypted, &identity, &ct_new);
	if (r != EP_TO_STACK)
		return r;
	r = ov_network(skb, identity, &deliver, ct_new);
	if (r != TC_ACT_OK || !deliver || (skb->mark & MARK_MAGIC_MASK))
		return r;
	r = ov_deliver(skb);
	if (r != EP_TO_STACK)
		return r;
	/* not from here (a fragment, a TTL about to expire, too big): the connection's entry is in
	 * the endpoint's CT_EXT table: its to_container looks there first (MARK_MAGIC_LOCAL_EP with
	 * sender 0; a hint, as the local one) */
	if ((deliver & DELIVER_EXT) && !skb->mark)
		skb->mark = MARK_MAGIC_LOCAL_EP;
	return overlay_redirect_rx(skb, deliver & ~DELIVER_EXT);
}

/* tc EGRESS of the VXLAN device: what the node routes into the tunnel gets its tunnel key (the
 * destination's node, the source identity in the VNI). */
SEC("tc")
int to_overlay(struct __sk_buff *skb)
{
	struct pkt p = {};
	stat_inc(STAT_OVERLAY_TX);
	/* keyed by from_container on its way here (only a program sets a key before this device) */
	struct bpf_tunnel_key k;
	if (bpf_skb_get_tunnel_key(skb, &k, sizeof(k), 0) == 0)
		return TC_ACT_OK;
	int r = parse_pkt(skb, &p);
	if (r == PARSE_OK && p.family != 4 && p.family != 6)
		r = PARSE_OTHER; /* the tunnel carries pods' IPv4 and IPv6 */
	if (r != PARSE_OK)
		return net_drop(skb, &p, 0, r > 0 ? DROP_UNKNOWN_L3 : (__u8)(-r), DIR_EGRESS);
	int d = overlay_set_key(skb, p.saddr, p.daddr, p.family);
	if (d)
		return net_drop(skb, &p, overlay_src_identity(p.saddr, p.family), d, DIR_EGRESS);
	return TC_ACT_OK;
}

#ifdef MB_L3_DEVICE
/* from_wireguard's parts (bpf/wireguard.bpf.c, tcx ingress of cilium_wg0), each in a frame of its
 * own: the endpoint hook's state (net_known) and net_ingress' together pass the 512-byte stack. */
/* Tunnel routing: what WireGuard decrypted is VXLAN from the peer node (its allowed IPs are its
 * node address). Cilium hands it to the stack, which gives it to cilium_vxlan (from_overlay); a
 * second trip through the receive path per packet. Here a well-formed VXLAN packet from a peer
 * node to this node, with a VNI a node may send and an inner IPv4 TCP/UDP packet (no options, not
 * a fragment) for a local endpoint, is decapsulated in place: outer IPv4, UDP, VXLAN and inner
 * Ethernet headers off, the inner IPv4 header where the outer was. Returns the VNI (the source's
 * identity), or 0 with the packet untouched: anything else goes the stack's way to from_overlay,
 * which judges (and drops with its reasons) what this does not take; or WG_DECAP_BROKEN when the
 * headers came off but the inner IPv4 header could not be written (the outer one with the inner
 * payload: never passed on). Only cilium_wg0 calls this: the VNI is trusted from a WireGuard
 * peer, never from plain VXLAN on the underlay's fast path. */
#define WG_VXLAN_HLEN (sizeof(struct udphdr) + 8 + sizeof(struct ethhdr))
#define WG_DECAP_BROKEN 0xffffffffu /* no VNI: identities have 24 bits */
struct wg_vxlan {
	struct iphdr o;
	struct udphdr u;
	__u8 vx_flags;
	__u8 vx_pad[3];
	__u8 vni[3];
	__u8 vx_pad2;
	struct ethhdr e;
	struct iphdr i;
	__be16 ports[2];
} __attribute__((packed));

static __noinline __u32 wg_decap(struct __sk_buff *skb)
{
	struct wg_vxlan h;
	if (bpf_skb_load_bytes(skb, 0, &h, sizeof(h)))
		return 0;
	const __u32 len = skb->len;
	if (h.o.version != 4 || h.o.ihl != 5 || h.o.protocol != IPPROTO_UDP ||
	    (h.o.frag_off & bpf_htons(0x3fff)) || bpf_ntohs(h.o.tot_len) != len ||
	    h.u.dest != bpf_htons(TUNNEL_PORT) || bpf_ntohs(h.u.len) != len - sizeof(struct iphdr) ||
	    h.vx_flags != 0x08 || h.e.h_proto != bpf_htons(ETH_P_IP) ||
	    h.i.version != 4 || h.i.ihl != 5 || (h.i.frag_off & bpf_htons(0x3fff)) ||
	    bpf_ntohs(h.i.tot_len) != len - sizeof(struct iphdr) - WG_VXLAN_HLEN ||
	    (h.i.protocol != IPPROTO_TCP && h.i.protocol != IPPROTO_UDP) || h.i.ttl <= 1)
		return 0;
	/* the inner packet may not itself be VXLAN (is_encap: only nodes encapsulate) */
	if (h.i.protocol == IPPROTO_UDP && h.ports[1] == bpf_htons(TUNNEL_PORT))
		return 0;
	const __u32 vni = ((__u32)h.vni[0] << 16) | ((__u32)h.vni[1] << 8) | h.vni[2];
	if (!vni_identity_valid(vni) || !is_tunnel_peer((const __u8 *)&h.o.saddr))
		return 0;
	struct ipcache_val *dv = ipcache_lookup((const __u8 *)&h.o.daddr);
	if (!dv || dv->identity != IDENTITY_HOST)
		return 0; /* not this node's address: the stack's business */
	dv = ipcache_lookup((const __u8 *)&h.i.daddr);
	if (!dv || !dv->ep_id)
		return 0; /* not for a local endpoint: the stack routes it */
	const struct iphdr inner = h.i;
	/* a failed room change changes nothing (the kernel checks and makes the bytes writable first).
	 * A GRO skb (cilium_wg0's NAPI: the vxlan socket's GRO merged datagrams of one inner TCP flow,
	 * same outer headers, same VNI) comes off as a whole; its gso_size is already the inner
	 * segments' payload, which the shrink must not grow (FIXED_GSO). Its SKB_GSO_UDP_TUNNEL bit
	 * and encapsulation flag stay (no helper clears them): it goes only to a local endpoint's TCP,
	 * straight or through the host veth, neither of which segments it. A merged skb that is not
	 * TCP (UDP GSO) is refused here and goes the stack's way to cilium_vxlan. */
	if (bpf_skb_adjust_room(skb, -(__s32)(WG_VXLAN_HLEN + sizeof(struct iphdr)), BPF_ADJ_ROOM_NET, BPF_F_ADJ_ROOM_FIXED_GSO))
		return 0;
	if (bpf_skb_store_bytes(skb, 0, &inner, sizeof(inner), 0)) {
		struct pkt p = {};
		__builtin_memcpy(p.saddr, &inner.saddr, 4);
		__builtin_memcpy(p.daddr, &inner.daddr, 4);
		p.proto = inner.protocol;
		p.family = 4;
		p.ethertype = bpf_htons(ETH_P_IP);
		net_drop(skb, &p, vni, DROP_WRITE_ERROR, DIR_INGRESS);
		return WG_DECAP_BROKEN;
	}
	stat_inc(STAT_OVERLAY_RX);
	return vni;
}

/* from_network's part: the source identity from the ipcache, spoof checks, the destination's
 * ingress policy and L7 redirect (a new connection's entry made here). */
static __noinline int wg_network(struct __sk_buff *skb, int known_new)
{
	return network_ingress(skb, skb->cb[WG_CB_VNI], known_new);
}

/* tcx INGRESS of cilium_wg0: a packet WireGuard decrypted and accepted from a peer, whose allowed
 * IPs (its pod CIDR) bound the source addresses it may use. What from_network does on a network
 * device; then, as Cilium's cil_from_wireguard with BPF host routing, a packet for a local
 * endpoint is delivered into the endpoint from here (bpf_redirect_peer) instead of being routed
 * by the host and sent through the host veth. Tunnel routing: the packet is VXLAN between node
 * addresses; Cilium hands it to the stack and cilium_vxlan (from_overlay). Here wg_decap takes
 * the VXLAN off what is for a local endpoint, and the inner packet goes the native way with the
 * VNI as its source's identity; the rest still goes to the stack and cilium_vxlan. */
SEC("tc")
int from_wireguard(struct __sk_buff *skb)
{
	stat_inc(STAT_PKTS_NET);
	skb->cb[WG_CB_VNI] = 0;
	if (tunnel_mode()) {
		const __u32 vni = wg_decap(skb);
		if (vni == WG_DECAP_BROKEN)
			return TC_ACT_SHOT; /* half rewritten: wg_decap reported the drop */
		skb->cb[WG_CB_VNI] = vni;
		if (!vni) {
			/* the outer packet: to the stack and cilium_vxlan, marked as decrypted for
			 * from_overlay (strict ingress) */
			int o = wg_network(skb, 0);
			if (o == TC_ACT_OK && !(skb->mark & MARK_MAGIC_MASK))
				skb->mark = MARK_MAGIC_DECRYPT;
			return o;
		}
		/* decapsulated: the inner packet goes the native way below, its source's identity
		 * the VNI (what is not delivered, a proxy's or an ICMP error's, goes to the stack as
		 * the inner packet and to_container, as from_overlay leaves it) */
	}
	/* established connections first: one parse, one conntrack lookup */
	int ct_new = 0;
	int r = net_known(skb, skb->cb[WG_CB_VNI], &ct_new);
	if (r != EP_TO_STACK)
		return r;
	r = wg_network(skb, ct_new);
	if (r != TC_ACT_OK || (skb->mark & MARK_MAGIC_MASK))
		return r; /* dropped, or steered to a socket the stack delivers to */
	r = net_known(skb, skb->cb[WG_CB_VNI], 0);
	return r == EP_TO_STACK ? TC_ACT_OK : r;
}
#endif

char _license[] SEC("license") = "GPL";
