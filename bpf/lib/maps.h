/* Map definitions and key/value layouts shared with the TS codecs (src/datapath/linux/codec.ts);
 * test/unit/datapath/layout.test.ts compiles these headers and compares sizes and offsets. */
#pragma once
#include "common.h"

/* Hash maps whose values the agent replaces while packets read them (endpoint configs, services,
 * backends, devices, WireGuard peers) are BPF_F_NO_PREALLOC, as Cilium's are by default: a
 * preallocated hash map recycles a replaced element as the writing CPU's spare at once, so the next
 * update on that CPU may overwrite it while a packet on another CPU still reads it through the
 * pointer its lookup returned (one endpoint's ifindex with another's identity). Without
 * preallocation a replaced element is freed only after an RCU grace period. A pinned map of an
 * older definition is replaced when the agent starts (src/datapath/linux/pins.ts). */

/* ---- endpoint config: key = host-side veth ifindex (u32) ---- */
#define EP_F_DENY_INGRESS 0x01
#define EP_F_DENY_EGRESS 0x02
/* Cilium's policy audit mode (POLICY_AUDIT_MODE, endpoint option PolicyAuditMode): this
 * endpoint's L3/L4 policy drops become passes reported as audited (lib/policy.h policy_audit). */
#define EP_F_AUDIT 0x04
/* mb_policy holds no entry of this endpoint in that direction (the agent's writer sets the bit
 * only once the direction's last entry is gone and clears it before the first is written): the
 * decision is what two missed lookups give, without the lookups (lib/policy.h policy_lookup). */
#define EP_F_NO_POLICY_INGRESS 0x08
#define EP_F_NO_POLICY_EGRESS 0x10
struct ep_config {
	__u32 ifindex;
	__u16 ep_id;
	__u8 flags;      /* EP_F_* default-deny and audit flags */
	__u8 pad;
	__u32 identity;
	__u8 ipv4[4];    /* network order */
	__u8 ipv6[16];
	__u8 mac[6];
	__u8 pad2[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct ep_config);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_endpoints SEC(".maps");

/* The same configs keyed by endpoint id (u32): a packet's DESTINATION endpoint (from the ipcache)
 * has its ingress policy decided where the packet enters the node (source veth, network device). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct ep_config);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_ep_ids SEC(".maps");

/* ---- ipcache: LPM trie prefix -> identity ---- */
struct ipcache_key {
	__u32 prefixlen; /* 32 (family + pad) + address prefix bits */
	__u8 family;     /* 4 or 6 */
	__u8 pad[3];
	__u8 addr[16];
};
struct ipcache_val {
	__u32 identity;
	__u16 ep_id;
	__u16 flags;
	/* Cilium's tunnel_endpoint: the underlay address of the node the prefix lives on (network
	 * order; 0: not behind a tunnel). A node's own InternalIP entry names itself: that is how
	 * the overlay knows a tunnel peer (lib/overlay.h). */
	__u8 tunnel_endpoint[4];
};
#define IPCACHE_STATIC_PREFIX 32

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 512 * 1024);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_ipcache SEC(".maps");

/* ---- ipcache, host entries: exact address -> the same value ----
 * Every full-length (/32, /128) prefix of mb_ipcache, under the same key (prefixlen = static +
 * 32 or 128), as Cilium keeps local endpoints in a hash (lxc map) beside its LPM ipcache: pods and
 * nodes, the entries nearly every packet looks up, cost one hash lookup whatever the trie's size;
 * the trie answers the rest (CIDRs, world). The agent writes the trie first and this second and
 * deletes here first: this map only ever holds an entry the trie holds with the same value (a
 * missing one falls back to the trie, never to another answer). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512 * 1024);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_ipcache_host SEC(".maps");

/* ---- policy: ONE global LPM trie ----
 * prefixlen = 64 (ep_id, dir, pad, identity) + (proto ? 8 : 0) + port prefix bits. */
struct policy_key {
	__u32 prefixlen;
	__u16 ep_id;
	__u8 dir;
	__u8 pad;
	__u32 identity;
	__u8 proto;
	__be16 dport;
} __attribute__((packed));
#define POLICY_STATIC_PREFIX 64
#define POLICY_FULL_PREFIX (64 + 8 + 16)

#define POL_F_DENY 0x01
struct policy_val {
	__u8 flags;      /* POL_F_DENY */
	__u8 auth_type;
	__u8 match_type;
	__u8 spec_len;   /* (proto ? 8 : 0) + portPrefixLen: "longest" in the lookup contract */
	__u16 proxy_port; /* host order; 0 = no L7 redirect */
	__u16 proxy_slot; /* index into mb_proxy_socks */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024 * 1024);
	__type(key, struct policy_key);
	__type(value, struct policy_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_policy SEC(".maps");

/* ---- conntrack: one pair of LRU tables per endpoint (map-in-map) ----
 * An entry lives in the table of the endpoint whose packet created it, so one endpoint's churn
 * or flood only ever evicts its own entries:
 *   CT_OWN(ep)  connections endpoint `ep` opened: its egress and service entries, and the
 *               ingress entries of local destinations decided at its source veth
 *   CT_EXT(ep)  connections opened towards `ep` by senders that are not endpoints of this node
 *               (world, host, other nodes)
 * The agent creates both tables when it adds the endpoint and removes them with it; packets of
 * an endpoint without tables are dropped (CT_NO_MAP_FOUND, 190). Fragment state (DIR_FRAG) is
 * kept in the sender's table too. */
#define CT_OWN(ep) (((__u32)(ep)) << 1)
#define CT_EXT(ep) ((((__u32)(ep)) << 1) | 1)
#define CT_TABLES (65536 * 2)
#define CT_TABLE_ENTRIES 8192

/* ct_key.dir of a service entry: frontend tuple -> chosen backend (Cilium's CT_SERVICE). */
#define DIR_SERVICE 3
/* ct_key.dir of a fragmented datagram's entry: (saddr, daddr, IP id in sport, proto) -> the L4
 * ports of its first fragment (Cilium's IPV4_FRAG_DATAGRAMS_MAP, kept per sender). */
#define DIR_FRAG 4
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 dir;        /* DIR_INGRESS / DIR_EGRESS: direction of the connection's first packet */
	__u8 pad;
	__u16 ep_id;
	__u16 pad2;
};

#define CT_F_FWD_FIN 0x01
#define CT_F_REV_FIN 0x02
#define CT_F_RST 0x04
#define CT_F_SEEN_REPLY 0x08
#define CT_F_PREDECIDED 0x10 /* ingress policy decided upstream: to_container traces NEW once */
/* the ingress L7 proxy's upstream connection to the endpoint (its transparent socket, bound to the
 * client's address, is the peer): the endpoint's replies belong to a socket of the node */
#define CT_F_PROXY_UPSTREAM 0x20
struct ct_val {
	__u64 expires;    /* bpf_ktime_get_ns deadline */
	__u64 created;
	__u8 fwd_flags;   /* TCP flags seen in the original direction (for trace aggregation) */
	__u8 rev_flags;   /* TCP flags seen in the reply direction */
	__u8 state;       /* CT_F_* */
	__u8 pad;
	__u16 proxy_port;
	__u16 proxy_slot;
	__u32 src_identity; /* DIR_SERVICE entries: the chosen backend id */
	__u16 rev_nat;      /* != 0: replies are reverse-NATed to this service frontend */
	__u16 dest_ep;      /* egress entries: the local destination endpoint whose ingress was
			     * decided at the source (0: none; MARK_MAGIC_LOCAL_EP) */
	__u32 pol_rev;      /* policy revision the forward direction was last allowed at */
	__be16 frag_sport;  /* DIR_FRAG entries: ports and policy port of the first fragment */
	__be16 frag_dport;
	__be16 frag_policy_port;
	__u16 pad3;
	/* monitor aggregation: when each direction was last traced, in seconds of bpf_ktime_get_ns
	 * modulo 2^16 (Cilium's last_tx_report / last_rx_report; compared by difference, so only an
	 * entry silent for a multiple of ~18 h can miss one interval's report) */
	__u16 fwd_report;
	__u16 rev_report;
};

#define CT_LIFETIME_TCP_SYN (60ULL * 1000000000ULL)
#define CT_LIFETIME_TCP (21600ULL * 1000000000ULL)
#define CT_LIFETIME_NONTCP (60ULL * 1000000000ULL)
#define CT_LIFETIME_CLOSE (10ULL * 1000000000ULL)
#define CT_LIFETIME_FRAG (30ULL * 1000000000ULL) /* the kernel's ipfrag_time */

/* The inner tables' template (sizes only: BTF of a type used through a template is a forward
 * declaration libbpf cannot size). The agent creates tables with the same parameters. */
struct ct_table {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CT_TABLE_ENTRIES);
	__uint(key_size, sizeof(struct ct_key));
	__uint(value_size, sizeof(struct ct_val));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, CT_TABLES);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct ct_table);
} mb_ct_tables SEC(".maps");

/* ---- datapath configuration written by the agent (one entry) ---- */
struct dp_config {
	/* Bumped by the agent after every change of policy, ipcache or endpoints: a conntrack entry
	 * whose pol_rev differs gets its next forward packet decided by policy again. */
	__u32 policy_rev;
	__u32 flags; /* DP_F_* */
	/* Event budget of each sender (GCRA): one event per ev_interval_ns, bursts of up to
	 * ev_burst_ns / ev_interval_ns + 1 events; 0 = unlimited. */
	__u64 ev_interval_ns;
	__u64 ev_burst_ns;
	/* Routing mode tunnel: the VXLAN device's ifindex once the overlay programs are attached (0:
	 * none). Pod traffic the node would route into it is encapsulated and redirected there by the
	 * endpoint program, and decapsulated traffic for a local endpoint is redirected to its veth
	 * (lib/overlay.h): the node's IP forwarding is skipped, its routing decision is not. */
	__u32 overlay_ifindex;
	/* Cilium's --monitor-aggregation as MON_AGG_* (0, what a config never written holds, is
	 * Cilium's default, medium) and --monitor-aggregation-interval in seconds (0: 5) */
	__u8 monitor_aggregation;
	__u8 pad;
	__u16 monitor_interval_s;
};

/* dp_config.monitor_aggregation (bpf/README.md "Monitor aggregation"): medium and maximum trace a
 * connection's packets where conntrack reports them (new flags, close, first reply, interval)
 * and never on receive; low and lowest trace every packet, never on receive; none every packet,
 * on receive (from-endpoint) too. */
#define MON_AGG_MEDIUM 0
#define MON_AGG_LOW 1
#define MON_AGG_NONE 2
#define MON_REPORT_INTERVAL_S 5

/* Routing mode tunnel (VXLAN): pods may not send to the tunnel port (DROP_ENCAP_PROHIBITED). */
#define DP_F_TUNNEL 0x01
/* The node has no services (the agent sets it while mb_lb4_services and mb_lb6_services are
 * empty, and clears it before it writes the first): a pod's packets skip the frontend lookup. */
#define DP_F_NO_SERVICES 0x04
/* IPv6 enforced (Cilium's enable-ipv6): parsed and decided like IPv4. Without it endpoints drop
 * every IPv6 frame (UNSUPPORTED_L3_PROTOCOL, 139), as before IPv6 was enforced. */
#define DP_F_IPV6 0x02
/* Strict ingress of transparent encryption (Cilium's --enable-encryption-strict-mode-ingress,
 * lib/encrypt.h): a pod's packet from another node must arrive decrypted. Here, not in
 * mb_encrypt, because the hooks it guards read mb_config per packet anyway. */
#define DP_F_STRICT_INGRESS 0x08

/* The agent writes this entry while packets read it: through bpf_map_update_elem the kernel
 * copies the whole value with memcpy, whose stores need not be one per field, so a packet could
 * read half of a changed field (a policy revision of the old and the new one's bytes, which may
 * equal a later revision and let a stale verdict stand then; an overlay ifindex naming another
 * device). The map is mapped into the agent instead (BPF_F_MMAPABLE) and each field is written
 * with one aligned store (src/datapath/linux/configmap.ts); every field a hook reads is a whole
 * naturally aligned word of its own or shares one with fields written in the same store. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_config);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_config SEC(".maps");

/* ---- per-sender event budgets, numbered like the conntrack tables: SENDER_OWN(ep) for events
 * caused by endpoint ep's packets, SENDER_EXT(ep) for events caused by packets sent to ep from
 * outside the node's endpoints. Index 0/1: no endpoint. ---- */
#define SENDER_OWN(ep) CT_OWN(ep)
#define SENDER_EXT(ep) CT_EXT(ep)
struct ev_bucket {
	__u64 tat;  /* GCRA theoretical arrival time */
	__u64 lost; /* events not emitted because the budget was spent */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CT_TABLES);
	__type(key, __u32);
	__type(value, struct ev_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_ev_buckets SEC(".maps");

/* ---- L7 proxy listeners: slot -> listening socket (the agent writes the listener's fd) ---- */
#define PROXY_SLOTS 64
#define PROXY_UDP_SLOT_OFFSET 32
#define PROXY_V6_SLOT_OFFSET 16 /* IPv6 listeners: TCP 16.., UDP 48.. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, PROXY_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_proxy_socks SEC(".maps");

/* ---- load balancing (Cilium's lb4): frontend VIP:port/proto -> backends ----
 * slot 0 is the service's master entry (count, rev_nat); slots 1..count hold backend ids. */
struct lb4_key {
	__u8 vip[4];      /* network order */
	__be16 dport;
	__u8 proto;
	__u8 pad;
	__u16 slot;
	__u16 pad2;
};
struct lb4_service {
	__u32 backend_id; /* slots >= 1 */
	__u16 count;      /* slot 0: number of backends */
	__u16 rev_nat;    /* slot 0: reverse-NAT id */
};
struct lb4_backend {
	__u8 addr[4];
	__be16 port;
	__u8 proto;
	__u8 pad;
};
struct lb4_reverse_nat {
	__u8 addr[4];
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb4_reverse_nat);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lb4_reverse_nat SEC(".maps");

/* ---- load balancing over IPv6 (Cilium's lb6: cilium_lb6_services_v2, _backends, _reverse_nat):
 * the same slot layout as lb4 with 16-byte addresses. Backend ids are per family (own map); the
 * reverse-NAT ids are one space across both families (the agent allocates them), a connection's
 * entry finds its frontend in the map of its own family. */
struct lb6_key {
	__u8 vip[16];     /* network order */
	__be16 dport;
	__u8 proto;
	__u8 pad;
	__u16 slot;
	__u16 pad2;
};
struct lb6_backend {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 pad;
};
struct lb6_reverse_nat {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct lb6_key);
	__type(value, struct lb4_service);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lb6_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb6_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lb6_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb6_reverse_nat);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lb6_reverse_nat SEC(".maps");

/* ---- frontend address filter (one entry; Cilium has none: its per-packet lb4_lookup_service is
 * what this skips) ----
 * 256 bits, one per lb_vip_bit() of an address (lib/lb.h; the agent's twin is lbmap.ts vipBit):
 * the bit of every frontend address of either family is set. A pod's packet whose destination's
 * bit is clear is no frontend's and skips the frontend lookup, which every pod packet made while
 * the node had any service. The agent sets a frontend's bit before it writes the frontend and
 * clears bits only once frontends are gone (recomputed from those left): a bit may be set with no
 * frontend behind it (a lookup that misses, as before), never clear with one. */
#define LB_VIP_FILTER_WORDS 4
struct lb_vip_filter {
	__u64 bits[LB_VIP_FILTER_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_vip_filter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lb_vips SEC(".maps");

/* An address's bit in mb_lb_vips (16 bytes; an IPv4 address in the first 4, zeros after): its four
 * words folded, a multiplicative hash, the top 8 bits. codec.ts lbVipBit computes the same
 * (test/unit/datapath/layout.test.ts compares them). */
static __always_inline __u32 lb_vip_bit(const __u8 *addr)
{
	const __u32 *a = (const void *)addr;
	return ((a[0] ^ a[1] ^ a[2] ^ a[3]) * 0x9e3779b1U) >> 24;
}

/* ---- the node's network devices with from_network attached: ifindex -> role (DEV_F_*) ----
 * Only the underlay may carry packets from other nodes' addresses (tunnel peers): on any other
 * device such a source is spoofed (lib/overlay.h). */
#define DEV_F_UNDERLAY 0x01
struct dev_config {
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct dev_config);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_devices SEC(".maps");

/* ---- the other nodes' link-layer addresses on the underlay: node InternalIP (IPv4, network order)
 * -> the MAC its node entry publishes. A remote pod's packet arriving on the underlay (routing mode
 * native) passes only with its node's MAC as link source (lib/overlay.h net_source_spoofed): one
 * hash lookup per packet instead of a FIB and neighbour lookup. The agent writes it from the node
 * entries; a node without an entry here sends no remote pod's address through the underlay. */
struct node_mac {
	__u8 mac[6];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct node_mac);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_node_macs SEC(".maps");
