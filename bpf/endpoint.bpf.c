// SPDX-License-Identifier: GPL-2.0
/* Endpoint programs for a pod's HOST-SIDE veth:
 *   from_container: tcx/tc INGRESS of the host veth = packets the pod sends (egress policy)
 *   to_container:   tcx/tc EGRESS of the host veth  = packets delivered to the pod (ingress policy)
 * Per packet: parse -> endpoint config -> (source validation) -> conntrack -> ipcache ->
 * policy (new connections only) -> pass | drop (reason) | steer to the L7 proxy. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/parse.h"
#include "lib/conntrack.h"
#include "lib/policy.h"

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
	__u32 key = slot;
	sk = bpf_map_lookup_elem(&mb_proxy_socks, &key);
	if (!sk)
		return DROP_PROXY_LOOKUP_FAILED;
	ret = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
out:
	if (ret)
		return DROP_PROXY_ASSIGN_FAILED;
	skb->mark = MARK_MAGIC_TO_PROXY;
	stat_inc(STAT_PROXY_REDIRECT);
	return 0;
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
	struct ct_key k;
	struct ct_val *v = 0;
	int ct = ct_lookup(&p, cfg->ep_id, dir, now, &k, &v);
	const __u8 *remote_addr = from ? p.daddr : p.saddr;

	if (ct != CT_NEW && v) {
		int trace;
		if (ct == CT_RELATED) {
			stat_inc(STAT_CT_RELATED);
			trace = 1;
		} else {
			stat_inc(ct == CT_REPLY ? STAT_CT_REPLY : STAT_CT_ESTABLISHED);
			trace = ct_update(v, &p, ct == CT_REPLY, now);
		}
		if (ct == CT_ESTABLISHED && v->proxy_port && from) {
			int d = proxy_steer(skb, &p, v->proxy_slot);
			if (d) {
				if (from)
					c.dst_identity = ipcache_identity(remote_addr);
				return do_drop(&p, &c, d, dir);
			}
		}
		if (trace) {
			if (from)
				c.dst_identity = ipcache_identity(remote_addr);
			else
				c.src_identity = ipcache_identity(remote_addr);
			emit_event(&p, &c, EV_TRACE, obs, ct, 0, 0, 0, dir);
		}
		stat_inc(STAT_PASS);
		return TC_ACT_OK;
	}

	/* New connection (or an unrelated ICMP error): policy. */
	__u32 remote = ipcache_identity(remote_addr);
	if (from)
		c.dst_identity = remote;
	else
		c.src_identity = remote;
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
			d = DROP_PROXY_UNSUPPORTED; /* ingress L7 at to_container: not yet */
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
	if (!p.is_icmp_err) {
		if (ct_create(&k, &p, dir, cfg->ep_id, now, c.src_identity, pr.proxy_port,
			      pr.proxy_slot) != 0)
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

char _license[] SEC("license") = "GPL";
