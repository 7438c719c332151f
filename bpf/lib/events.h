/* One fixed record for every monitor event (drop, trace, policy verdict), written to the
 * pinned ring buffer mb_events; decoded by src/datapath/linux/codec.ts (decodeEvent). */
#pragma once
#include "common.h"
#include "maps.h"

struct mb_event {
	__u64 time_ns;     /* bpf_ktime_get_ns */
	__u8 type;         /* EV_* */
	__u8 subtype;      /* DROP: reason; TRACE: observation point; VERDICT: 0 */
	__u8 ip_version;
	__u8 proto;
	__u16 ep_id;
	__u8 tcp_flags;
	__u8 ct_reason;
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u16 sport;       /* host order */
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 direction;    /* 0 unknown, DIR_INGRESS, DIR_EGRESS */
	__u8 match_type;
	__s32 verdict;     /* VERDICT: <0 -reason, 0 forward, >0 proxy port */
	__u8 auth_type;
	__u8 flags;        /* EV_F_* */
	__be16 ethertype;  /* network order, as in the frame */
	__u32 length;
};

/* VERDICT: the packet passed because its endpoint is in policy audit mode (Cilium's
 * PolicyVerdictNotify audited flag; Hubble's Verdict AUDIT). */
#define EV_F_AUDITED 0x01

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_events SEC(".maps");

/* Ring reserve failures, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lost SEC(".maps");

/* Event context filled by the program as it learns things. */
struct ev_ctx {
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u16 ep_id;
	__u8 direction;
	__u8 pad;
	__u32 bucket; /* the sender's event budget (SENDER_OWN / SENDER_EXT) */
	/* the packet's bpf_ktime_get_ns once the hook has read it (0: not yet): an event's time and
	 * its budget's clock, so an event costs no clock read of its own (~30 ns each here, kvm-clock) */
	__u64 now;
};

/* Spends one event of the sender's budget (GCRA); a spent budget counts the event as lost for
 * that sender, so one endpoint's flood cannot crowd every other endpoint's events out of the
 * ring. */
static __always_inline int ev_admit(__u32 bucket, __u64 now)
{
	__u32 z = 0;
	struct dp_config *conf = bpf_map_lookup_elem(&mb_config, &z);
	if (!conf || !conf->ev_interval_ns)
		return 1;
	struct ev_bucket *b = bpf_map_lookup_elem(&mb_ev_buckets, &bucket);
	if (!b)
		return 1;
	__u64 tat = b->tat;
	if (tat < now)
		tat = now;
	if (tat - now > conf->ev_burst_ns) {
		__sync_fetch_and_add(&b->lost, 1);
		stat_inc(STAT_EVENTS_LIMITED);
		return 0;
	}
	b->tat = tat + conf->ev_interval_ns;
	return 1;
}

/* Writes one event; the small fields travel packed in `meta` (a subprogram: one copy of this
 * code, and its locals off the callers' frames). */
static __noinline void emit(const struct pkt *p, const struct ev_ctx *c, __u64 meta, __s32 verdict)
{
	const __u64 now = c->now ? c->now : bpf_ktime_get_ns();
	if (!ev_admit(c->bucket, now))
		return;
	struct mb_event *e = bpf_ringbuf_reserve(&mb_events, sizeof(*e), 0);
	if (!e) {
		__u32 z = 0;
		__u64 *lost = bpf_map_lookup_elem(&mb_lost, &z);
		if (lost)
			*lost += 1;
		return;
	}
	e->time_ns = now;
	e->type = (__u8)meta;
	e->subtype = (__u8)(meta >> 8);
	e->ip_version = p->family;
	e->proto = p->proto;
	e->ep_id = c->ep_id;
	e->tcp_flags = p->tcp_flags;
	e->ct_reason = (__u8)(meta >> 16);
	e->ifindex = c->ifindex;
	e->src_identity = c->src_identity;
	e->dst_identity = c->dst_identity;
	e->sport = bpf_ntohs(p->sport);
	e->dport = bpf_ntohs(p->dport);
	__builtin_memcpy(e->saddr, p->saddr, 16);
	__builtin_memcpy(e->daddr, p->daddr, 16);
	e->icmp_type = p->icmp_type;
	e->icmp_code = p->icmp_code;
	e->direction = (__u8)(meta >> 40);
	e->match_type = (__u8)(meta >> 24);
	e->verdict = verdict;
	e->auth_type = (__u8)(meta >> 32);
	e->flags = (__u8)(meta >> 48);
	e->ethertype = p->ethertype;
	e->length = p->len;
	bpf_ringbuf_submit(e, 0);
	stat_inc(STAT_EVENTS);
}

static __always_inline void emit_event_f(const struct pkt *p, const struct ev_ctx *c, __u8 type,
					 __u8 subtype, __u8 ct_reason, __s32 verdict, __u8 match_type,
					 __u8 auth_type, __u8 direction, __u8 flags)
{
	emit(p, c,
	     (__u64)type | ((__u64)subtype << 8) | ((__u64)ct_reason << 16) | ((__u64)match_type << 24) |
		     ((__u64)auth_type << 32) | ((__u64)direction << 40) | ((__u64)flags << 48),
	     verdict);
}

static __always_inline void emit_event(const struct pkt *p, const struct ev_ctx *c, __u8 type,
				       __u8 subtype, __u8 ct_reason, __s32 verdict, __u8 match_type,
				       __u8 auth_type, __u8 direction)
{
	emit_event_f(p, c, type, subtype, ct_reason, verdict, match_type, auth_type, direction, 0);
}
