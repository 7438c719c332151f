/* Shared definitions for membrane's tc programs. Only __sk_buff + uapi types (no vmlinux.h,
 * no CO-RE), so the object loads on any kernel with tcx (6.6+) or clsact. */
#pragma once
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Cilium drop reasons (pkg/monitor/api/drop.go). */
#define DROP_INVALID_SIP 132
#define DROP_POLICY 133          /* POLICY_DENIED: default deny */
#define DROP_INVALID 134         /* INVALID_PACKET_DROPPED */
#define DROP_CT_INVALID_HDR 135  /* CT_TRUNCATED_OR_INVALID_HEADER */
#define DROP_UNKNOWN_L3 139      /* UNSUPPORTED_L3_PROTOCOL: not IPv4/IPv6/ARP, VLAN tags, IPv6 when disabled */
#define DROP_WRITE_ERROR 141     /* ERROR_WRITING_TO_PACKET: a rewrite failed part way */
#define DROP_CSUM_L3 153         /* ERROR_WHILE_CORRECTING_L3_CHECKSUM */
#define DROP_INVALID_EXTHDR 156  /* Invalid IPv6 extension header: unknown, misplaced, too many, source routing */
#define DROP_NO_TUNNEL_KEY 147   /* Error retrieving tunnel key */
#define DROP_NO_SERVICE 158      /* SERVICE_BACKEND_NOT_FOUND */
#define DROP_NO_TUNNEL_ENDPOINT 160 /* no tunnel endpoint for the destination */
#define DROP_ENCAP_PROHIBITED 170 /* a pod sent to the tunnel port */
#define DROP_INVALID_IDENTITY 171 /* the VNI is not an identity a node may send */
#define DROP_UNKNOWN_SENDER 172  /* tunnel packet from an address that is not a node's */
#define DROP_CT_CREATE_FAILED 155 /* CT_MAP_INSERTION_FAILED */
#define DROP_PROXY_LOOKUP_FAILED 178 /* SOCKET_LOOKUP_FAILED: no proxy listener */
#define DROP_PROXY_ASSIGN_FAILED 179 /* SOCKET_ASSIGN_FAILED */
#define DROP_PROXY_UNSUPPORTED 180   /* PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL */
#define DROP_POLICY_DENY 181     /* POLICY_DENY: explicit deny rule */
#define DROP_FRAG_NOT_FOUND 175  /* FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND */
#define DROP_POLICY_AUTH_REQUIRED 189
#define DROP_CT_NO_MAP 190       /* CT_NO_MAP_FOUND: the endpoint's conntrack table is missing */
#define DROP_EP_NOT_READY 203

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
/* IPv6 next-header values of the extension headers (RFC 8200, IANA). */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_ESP 50
#define NEXTHDR_AUTH 51
#define NEXTHDR_NONE 59
#define NEXTHDR_DEST 60
#define NEXTHDR_MOBILITY 135
#define NEXTHDR_HIP 139
#define NEXTHDR_SHIM6 140
#define NEXTHDR_EXP1 253
#define NEXTHDR_EXP2 254
/* ICMPv6 types the parser treats specially (RFC 4443, RFC 4861). */
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define ICMPV6_RS 133
#define ICMPV6_RA 134
#define ICMPV6_NS 135
#define ICMPV6_NA 136

/* Monitor event types (pkg/monitor/api/types.go). */
#define EV_DROP 1
#define EV_TRACE 4
#define EV_POLICY_VERDICT 5

/* Trace observation points (datapath numbering). */
#define TRACE_TO_ENDPOINT 0
#define TRACE_TO_PROXY 1
#define TRACE_TO_STACK 3
#define TRACE_TO_OVERLAY 4
#define TRACE_FROM_ENDPOINT 5
#define TRACE_FROM_OVERLAY 9

/* Conntrack result (flow TraceReason numbering). */
#define CT_NEW 1
#define CT_ESTABLISHED 2
#define CT_REPLY 3
#define CT_RELATED 4

/* Direction as stored in maps: 1 ingress (to the endpoint), 2 egress (from the endpoint). */
#define DIR_INGRESS 1
#define DIR_EGRESS 2

/* skb->mark for packets steered to a local proxy (Cilium's MARK_MAGIC_TO_PROXY). The agent adds
 * `ip rule fwmark 0x200/0xf00 lookup 2004` + `ip route add local 0.0.0.0/0 dev lo table 2004`. */
#define MARK_MAGIC_TO_PROXY 0x200
#define MARK_MAGIC_MASK 0xf00
/* Set (SO_MARK) by the ingress L7 proxy on its upstream connections to local endpoints: their
 * ingress policy was already enforced by the proxy (Cilium's MARK_MAGIC_PROXY_INGRESS). */
#define MARK_MAGIC_PROXY_INGRESS 0xa00
/* Set by a local endpoint's from_container on a packet of a connection whose destination is a
 * local endpoint and whose ingress was decided there (the slot of Cilium's MARK_MAGIC_IDENTITY,
 * which carries the source to the destination's policy program): the sender's endpoint id in
 * bits 16..31. The destination's to_container then finds the connection's ingress entry with one
 * lookup, in the sender's table, instead of missing in its own table, resolving the source in the
 * ipcache and then looking there. It is a hint, never a verdict: the node's processes can set any
 * mark (a pod's is cleared as its packet leaves the pod's namespace), so a marked packet still
 * needs that entry, which only a decision at the sender created; without it the packet takes the
 * full path. With sender 0 it is from_overlay's, on a packet it redirects to a local endpoint
 * whose connection's entry it found or created in that endpoint's CT_EXT table (a connection
 * from outside the node's endpoints): to_container looks there first, the same way. */
#define MARK_MAGIC_LOCAL_EP 0xf00
/* Set by from_wireguard on a decrypted packet it hands to the stack for cilium_vxlan (tunnel
 * routing: the outer VXLAN of what it did not deliver itself). from_overlay reads and clears it:
 * with strict ingress, VXLAN without it came over the underlay in plain text (Cilium's
 * MARK_MAGIC_DECRYPT). The mark stays on the skb through the vxlan device's receive (same
 * namespace); a node process can set it too, but a node process can send anything anyway. */
#define MARK_MAGIC_DECRYPT 0xd00

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

/* linux/icmp.h drags in libc headers; the few definitions we need: */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_REDIRECT 5
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		__be32 gateway;
	} un;
};

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Stats counters (per-CPU array "mb_stats"). Mirrored in src/datapath/linux/codec.ts. */
#define STAT_PKTS_FROM 0
#define STAT_PKTS_TO 1
#define STAT_PASS 2
#define STAT_DROP 3
#define STAT_CT_NEW 4
#define STAT_CT_ESTABLISHED 5
#define STAT_CT_REPLY 6
#define STAT_CT_RELATED 7
#define STAT_POLICY_LOOKUPS 8
#define STAT_PROXY_REDIRECT 9
#define STAT_EVENTS 10
#define STAT_NON_IPV4 11
#define STAT_LB_XLATE 12
#define STAT_INGRESS_EARLY 13
#define STAT_PKTS_NET 14
#define STAT_EVENTS_LIMITED 15  /* events not emitted: the sender's event budget was spent */
#define STAT_POLICY_RECHECK 16  /* policy lookups for established (non-reply) packets */
#define STAT_FRAGMENTS 17       /* IPv4 fragments seen (first and later) */
#define STAT_MALFORMED 18       /* IPv4 packets dropped by the parser (checksum, lengths, headers) */
#define STAT_OVERLAY_RX 19      /* packets decapsulated from the tunnel (from_overlay) */
#define STAT_OVERLAY_TX 20      /* packets encapsulated into the tunnel (to_overlay) */
#define STAT_ND 21              /* IPv6 neighbour discovery passed without policy (as ARP) */
#define STAT_WG_DELIVER 22      /* packets from cilium_wg0 redirected straight into their endpoint (from_wireguard) */
#define STAT_OVERLAY_REDIRECT 23 /* packets sent past the node's IP forwarding to the tunnel or an endpoint (lib/overlay.h) */
/* to_container's conntrack lookups answered by MARK_MAGIC_LOCAL_EP's hint: one lookup, no ipcache */
#define STAT_CT_HINTED 24
#define STAT_LOCAL_DELIVER 25   /* packets an endpoint sent redirected straight into a local endpoint (from_container) */
#define STAT_OVERLAY_DELIVER 26 /* packets from the tunnel redirected straight into their endpoint (from_overlay) */
#define STAT_NET_DELIVER 27     /* packets from a network device redirected straight into their endpoint (from_network) */
#define STAT_NATIVE_REDIRECT 28 /* routing mode native: pod packets sent past the node's IP forwarding to another node (from_container) */
#define STAT_MAX 29
/* mb_stats' size, with room to spare: a pinned map keeps the size it was made with, so a new
 * counter within it needs no `membrane down` (the counters past STAT_MAX read 0) */
#define STAT_ENTRIES 32
_Static_assert(STAT_MAX <= STAT_ENTRIES, "mb_stats holds every counter");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&mb_stats, &idx);
	if (v)
		*v += 1;
}

/* Fragment position of a packet (pkt.frag; IPv4 flags/offset or the IPv6 fragment header). */
#define FRAG_NONE 0
#define FRAG_FIRST 1 /* offset 0, more fragments: carries the L4 header */
#define FRAG_LATER 2 /* offset > 0: no L4 header, ports come from the first fragment */

/* The parsed packet: addresses are 16-byte fields (IPv4 in the first 4 bytes, zero after). Ports are in network byte order; for ICMP echo the identifier is
 * carried as sport (request) or dport (reply). */
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;      /* 4 or 6 once the addresses are read (also for drops of malformed packets) */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 is_icmp_err; /* ICMP error carrying an inner tuple */
	__u16 l4_off;     /* offset of the L4 header from skb->data */
	__u32 len;
	/* inner tuple of an ICMP error (as the original packet travelled; IPv4 addresses) */
	__u8 in_saddr[4];
	__u8 in_daddr[4];
	__be16 in_sport;
	__be16 in_dport;
	__u8 in_proto;
	__u8 frag;        /* FRAG_* */
	__be16 ip_id;     /* IPv4 identification; IPv6: high half of the fragment id (fragment tracking) */
	/* policy port: dport for TCP/UDP, ICMP type (big-endian u16) for ICMP */
	__be16 policy_port;
	__u16 in_l4_off;  /* ICMP error: offset of the inner L4 header from skb->data */
	__be16 ethertype; /* the frame's ethertype as the program saw it (drop events) */
	__be16 ip_id_lo;  /* IPv6: low half of the 32-bit fragment id (0 for IPv4) */
};
