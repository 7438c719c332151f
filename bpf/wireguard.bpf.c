// SPDX-License-Identifier: GPL-2.0
/* The endpoint programs built for an L3 device: WireGuard's cilium_wg0 (a TUN under
 * wireguard-go) hands decrypted packets to tc with no link header. Only from_wireguard is attached
 * (tcx ingress of cilium_wg0, src/agent/encryption.ts): the destination's ingress policy and L7
 * redirect for traffic from other nodes, as from_network on the underlay device, and delivery of
 * what is for a local endpoint straight into it (Cilium builds its WireGuard program the same
 * way, with a zero link-header length). Maps are the node's, pinned by name. */
#include "lib/common.h"
#undef ETH_HLEN
#define ETH_HLEN 0
#define MB_L3_DEVICE 1
#include "endpoint.bpf.c"
