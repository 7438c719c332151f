/* Identity-aware L3/L4 policy: the lookup contract of src/policy/types.ts, on one LPM trie. */
#pragma once
#include "common.h"
#include "maps.h"

static __always_inline struct ipcache_val *ipcache_lookup(const __u8 *addr)
{
	struct ipcache_key k = {};
	k.prefixlen = IPCACHE_STATIC_PREFIX + 32;
	k.family = 4;
	__builtin_memcpy(k.addr, addr, 4);
	return bpf_map_lookup_elem(&mb_ipcache, &k);
}

static __always_inline __u32 ipcache_identity(const __u8 *addr)
{
	struct ipcache_key k = {};
	k.prefixlen = IPCACHE_STATIC_PREFIX + 32;
	k.family = 4;
	__builtin_memcpy(k.addr, addr, 4);
	struct ipcache_val *v = bpf_map_lookup_elem(&mb_ipcache, &k);
	return v ? v->identity : 2 /* world */;
}

struct policy_result {
	__u32 drop;       /* 0 allow, else drop reason */
	__u16 proxy_port;
	__u16 proxy_slot;
	__u8 match_type;
	__u8 auth_type;
	__u8 pad[2];
};

/* 1. e1 = LPM among identity == remote, e2 = LPM among identity == 0
 * 2. a deny in either -> 181; 3. neither -> default deny ? 133 : allow;
 * 4. the longer (tie: e1) allow wins. */
static __always_inline void policy_lookup(__u16 ep, __u8 dir, __u8 default_deny, __u32 remote,
					  __u8 proto, __be16 port, struct policy_result *r)
{
	struct policy_key k;
	k.prefixlen = POLICY_FULL_PREFIX;
	k.ep_id = ep;
	k.dir = dir;
	k.pad = 0;
	k.identity = remote;
	k.proto = proto;
	k.dport = port;
	struct policy_val *e1 = bpf_map_lookup_elem(&mb_policy, &k);
	k.identity = 0;
	struct policy_val *e2 = bpf_map_lookup_elem(&mb_policy, &k);
	stat_inc(STAT_POLICY_LOOKUPS);
	r->proxy_port = 0;
	r->proxy_slot = 0;
	r->match_type = 0;
	r->auth_type = 0;
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
