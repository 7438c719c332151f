// The C structs (bpf/lib/*.h) and the TS codecs agree: compile a tiny host C program against the
// BPF headers' struct definitions, print sizeof/offsetof, compare with codec.ts constants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from '../../support/requirements.ts';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as C from '../../../src/datapath/linux/codec.ts';
import { PROXY_UDP_SLOT_OFFSET, PROXY_V6_SLOT_OFFSET, proxySlot } from '../../../src/common/proxy-ports.ts';

const bpfDir = fileURLToPath(new URL('../../../bpf/', import.meta.url));

// frontend addresses whose filter bit (mb_lb_vips) the C header and codec.ts lbVipBit compute alike
const VIPS = ['10.96.0.10', '10.96.0.50', '10.244.1.7', '192.0.2.200', 'fd00:10:96::a', '2001:db8::1', 'fd00::ffff:1'];

test('C struct layouts match the TS codecs', { skip: skipUnless('clang') }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdp-layout-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Host build: replace the BPF-only map/helper machinery with no-ops, keep the structs.
  const src = `
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <arpa/inet.h>
#define SEC(x)
#define __uint(n, v) int n
#define __type(n, v) v *n
#define __array(n, v) v *n[]
#define __noinline __attribute__((noinline))
#define LIBBPF_PIN_BY_NAME 1
#define bpf_map_lookup_elem(m, k) ((void *)0)
#define bpf_ringbuf_reserve(m, s, f) ((void *)0)
#define bpf_ringbuf_submit(e, f)
#define bpf_ktime_get_ns() 0ULL
#define bpf_map_update_elem(m, k, v, f) 0
#define BPF_HELPERS_H_STUB
#include <linux/types.h>
#include <linux/bpf.h>
#define __BPF_HELPERS__
#define __BPF_ENDIAN__
#define bpf_htons(x) __builtin_bswap16(x)
#define bpf_ntohs(x) __builtin_bswap16(x)
#include "lib/maps.h"
#include "lib/events.h"
#define P(s) printf(#s " %zu\\n", sizeof(struct s))
#define O(s, f) printf(#s "." #f " %zu\\n", offsetof(struct s, f))
static const char *VIPS[] = { ${VIPS.map((v) => `"${v}"`).join(', ')} };
int main(void) {
  for (unsigned i = 0; i < sizeof(VIPS) / sizeof(VIPS[0]); i++) {
    unsigned char a[16] = { 0 };
    inet_pton(strchr(VIPS[i], ':') ? AF_INET6 : AF_INET, VIPS[i], a);
    printf("vipbit%u %u\\n", i, lb_vip_bit(a));
  }
  P(lb_vip_filter);
  P(ep_config); O(ep_config, ep_id); O(ep_config, flags); O(ep_config, identity); O(ep_config, ipv4); O(ep_config, ipv6); O(ep_config, mac);
  P(ipcache_key); O(ipcache_key, family); O(ipcache_key, addr); P(ipcache_val); O(ipcache_val, ep_id); O(ipcache_val, tunnel_endpoint);
  P(policy_key); O(policy_key, ep_id); O(policy_key, dir); O(policy_key, identity); O(policy_key, proto); O(policy_key, dport);
  P(policy_val); O(policy_val, auth_type); O(policy_val, match_type); O(policy_val, spec_len); O(policy_val, proxy_port); O(policy_val, proxy_slot);
  P(ct_key); O(ct_key, sport); O(ct_key, dport); O(ct_key, proto); O(ct_key, family); O(ct_key, dir); O(ct_key, ep_id);
  P(ct_val); O(ct_val, created); O(ct_val, fwd_flags); O(ct_val, rev_flags); O(ct_val, state); O(ct_val, proxy_port); O(ct_val, src_identity);
  O(ct_val, rev_nat); O(ct_val, dest_ep); O(ct_val, pol_rev); O(ct_val, frag_sport); O(ct_val, frag_dport); O(ct_val, frag_policy_port); O(ct_val, fwd_report); O(ct_val, rev_report);
  printf("CT_TABLE_ENTRIES %d\\nCT_TABLES %d\\nDIR_SERVICE %d\\nDIR_FRAG %d\\nSTAT_EVENTS_LIMITED %d\\nSTAT_MAX %d\\nSTAT_ENTRIES %d\\n", CT_TABLE_ENTRIES, CT_TABLES, DIR_SERVICE, DIR_FRAG, STAT_EVENTS_LIMITED, STAT_MAX, STAT_ENTRIES);
  printf("DP_F_NO_SERVICES %d\\nDP_F_STRICT_INGRESS %d\\nSTAT_OVERLAY_DELIVER %d\\nSTAT_NET_DELIVER %d\\n", DP_F_NO_SERVICES, DP_F_STRICT_INGRESS, STAT_OVERLAY_DELIVER, STAT_NET_DELIVER);
  printf("DP_F_TUNNEL %d\\nDP_F_IPV6 %d\\nSTAT_ND %d\\nSTAT_WG_DELIVER %d\\nSTAT_OVERLAY_REDIRECT %d\\nSTAT_CT_HINTED %d\\nSTAT_LOCAL_DELIVER %d\\nSTAT_NATIVE_REDIRECT %d\\n", DP_F_TUNNEL, DP_F_IPV6, STAT_ND, STAT_WG_DELIVER, STAT_OVERLAY_REDIRECT, STAT_CT_HINTED, STAT_LOCAL_DELIVER, STAT_NATIVE_REDIRECT);
  printf("CT_OWN_7 %u\\nCT_EXT_7 %u\\n", CT_OWN(7), CT_EXT(7));
  printf("PROXY_SLOTS %d\\nPROXY_UDP_SLOT_OFFSET %d\\nPROXY_V6_SLOT_OFFSET %d\\n", PROXY_SLOTS, PROXY_UDP_SLOT_OFFSET, PROXY_V6_SLOT_OFFSET);
  P(dp_config); O(dp_config, policy_rev); O(dp_config, flags); P(dev_config); P(node_mac); O(dp_config, ev_interval_ns); O(dp_config, ev_burst_ns); O(dp_config, overlay_ifindex); O(dp_config, monitor_aggregation); O(dp_config, monitor_interval_s);
  P(ev_bucket); O(ev_bucket, lost);
  P(lb4_key); O(lb4_key, dport); O(lb4_key, proto); O(lb4_key, slot); P(lb4_service); P(lb4_backend); P(lb4_reverse_nat);
  P(lb6_key); O(lb6_key, dport); O(lb6_key, proto); O(lb6_key, slot); P(lb6_backend); O(lb6_backend, port); O(lb6_backend, proto); P(lb6_reverse_nat); O(lb6_reverse_nat, port);
  P(mb_event); O(mb_event, type); O(mb_event, subtype); O(mb_event, ip_version); O(mb_event, proto); O(mb_event, ep_id); O(mb_event, tcp_flags);
  O(mb_event, ct_reason); O(mb_event, ifindex); O(mb_event, src_identity); O(mb_event, dst_identity); O(mb_event, sport); O(mb_event, dport);
  O(mb_event, saddr); O(mb_event, daddr); O(mb_event, icmp_type); O(mb_event, icmp_code); O(mb_event, direction); O(mb_event, match_type);
  O(mb_event, verdict); O(mb_event, auth_type); O(mb_event, flags); O(mb_event, ethertype); O(mb_event, length);
  return 0;
}`;
  writeFileSync(join(dir, 'l.c'), src);
  // bpf_helpers.h is replaced by a stub directory that shadows <bpf/bpf_helpers.h> and <bpf/bpf_endian.h>
  const stub = join(dir, 'stub', 'bpf');
  execFileSync('mkdir', ['-p', stub]);
  writeFileSync(join(stub, 'bpf_helpers.h'), '#pragma once\n');
  writeFileSync(join(stub, 'bpf_endian.h'), '#pragma once\n');
  const arch = execFileSync('uname', ['-m']).toString().trim();
  execFileSync('clang', ['-O0', '-w', `-I${join(dir, 'stub')}`, `-I${bpfDir}`, `-I/usr/include/${arch}-linux-gnu`, join(dir, 'l.c'), '-o', join(dir, 'l')]);
  const out = Object.fromEntries(execFileSync(join(dir, 'l')).toString().trim().split('\n').map((l) => { const [k, v] = l.split(' '); return [k!, Number(v)]; }));

  assert.equal(out.ep_config, C.EP_CONFIG_SIZE);
  assert.deepEqual([out['ep_config.ep_id'], out['ep_config.flags'], out['ep_config.identity'], out['ep_config.ipv4'], out['ep_config.ipv6'], out['ep_config.mac']], [4, 6, 8, 12, 16, 32]);
  assert.equal(out.ipcache_key, C.IPCACHE_KEY_SIZE);
  assert.deepEqual([out['ipcache_key.family'], out['ipcache_key.addr']], [4, 8]);
  assert.equal(out.ipcache_val, C.IPCACHE_VAL_SIZE);
  assert.equal(out['ipcache_val.ep_id'], 4);
  assert.equal(out['ipcache_val.tunnel_endpoint'], 8);
  assert.equal(out['dp_config.flags'], 4);
  assert.deepEqual([out.lb4_key, out['lb4_key.dport'], out['lb4_key.proto'], out['lb4_key.slot']], [C.LB4_KEY_SIZE, 4, 6, 8]);
  assert.deepEqual([out.lb4_service, out.lb4_backend, out.lb4_reverse_nat], [C.LB4_SERVICE_SIZE, C.LB4_BACKEND_SIZE, C.LB4_REVNAT_SIZE]);
  assert.deepEqual([out.lb6_key, out['lb6_key.dport'], out['lb6_key.proto'], out['lb6_key.slot']], [C.LB6_KEY_SIZE, 16, 18, 20]);
  assert.deepEqual([out.lb6_backend, out['lb6_backend.port'], out['lb6_backend.proto']], [C.LB6_BACKEND_SIZE, 16, 18]);
  assert.deepEqual([out.lb6_reverse_nat, out['lb6_reverse_nat.port']], [C.LB6_REVNAT_SIZE, 16]);
  assert.equal(out.lb_vip_filter, C.LB_VIP_FILTER_SIZE);
  assert.deepEqual(VIPS.map((_v, i) => out[`vipbit${i}`]), VIPS.map((v) => C.lbVipBit(v)), 'the frontend filter bit, C and TS');
  assert.ok(new Set(VIPS.map((v) => C.lbVipBit(v))).size > 3, 'the bits spread');
  assert.equal(out.dev_config, C.DEV_CONFIG_SIZE);
  assert.equal(out.node_mac, C.NODE_MAC_SIZE);
  assert.deepEqual([...C.encodeNodeMacKey('192.0.2.7')], [192, 0, 2, 7]);
  assert.deepEqual([...C.encodeNodeMac('02:00:c0:00:02:0a')], [2, 0, 0xc0, 0, 2, 0x0a, 0, 0]);
  assert.throws(() => C.encodeNodeMac('02:00:c0:00:02'), /not a MAC/);
  assert.equal(out.policy_key, C.POLICY_KEY_SIZE);
  assert.deepEqual([out['policy_key.ep_id'], out['policy_key.dir'], out['policy_key.identity'], out['policy_key.proto'], out['policy_key.dport']], [4, 6, 8, 12, 13]);
  assert.equal(out.policy_val, C.POLICY_VAL_SIZE);
  assert.deepEqual([out['policy_val.auth_type'], out['policy_val.match_type'], out['policy_val.spec_len'], out['policy_val.proxy_port'], out['policy_val.proxy_slot']], [1, 2, 3, 4, 6]);
  assert.equal(out.ct_key, C.CT_KEY_SIZE);
  assert.deepEqual([out['ct_key.sport'], out['ct_key.dport'], out['ct_key.proto'], out['ct_key.family'], out['ct_key.dir'], out['ct_key.ep_id']], [32, 34, 36, 37, 38, 40]);
  assert.equal(out.ct_val, C.CT_VAL_SIZE);
  assert.deepEqual([out['ct_val.created'], out['ct_val.fwd_flags'], out['ct_val.rev_flags'], out['ct_val.state'], out['ct_val.proxy_port'], out['ct_val.src_identity']], [8, 16, 17, 18, 20, 24]);
  assert.deepEqual(['rev_nat', 'dest_ep', 'pol_rev', 'frag_sport', 'frag_dport', 'frag_policy_port', 'fwd_report', 'rev_report'].map((f) => out[`ct_val.${f}`]), [28, 30, 32, 36, 38, 40, 44, 46]);
  assert.deepEqual([out.CT_TABLE_ENTRIES, out.CT_TABLES, out.DIR_SERVICE, out.DIR_FRAG], [C.CT_TABLE_ENTRIES, C.CT_TABLES, C.DIR_SERVICE, C.DIR_FRAG]);
  assert.deepEqual([out.CT_OWN_7, out.CT_EXT_7], [C.ctOwnIndex(7), C.ctExtIndex(7)]);
  assert.deepEqual([out.STAT_EVENTS_LIMITED, out.STAT_MAX, out.STAT_ENTRIES], [C.STAT_EVENTS_LIMITED, C.STAT_MAX, C.STAT_ENTRIES]);
  assert.equal(C.STAT_NAMES.length, C.STAT_MAX);
  // the proxies' sockmap layout: every (parser, direction, transport, family) slot fits, in the C offsets
  assert.deepEqual([out.PROXY_UDP_SLOT_OFFSET, out.PROXY_V6_SLOT_OFFSET], [PROXY_UDP_SLOT_OFFSET, PROXY_V6_SLOT_OFFSET]);
  assert.ok(proxySlot('tls', 'ingress', 'UDP', 6) < out.PROXY_SLOTS!);
  assert.ok(proxySlot('tls', 'ingress', 'TCP', 4) < PROXY_V6_SLOT_OFFSET, 'the IPv4 TCP slots end below the IPv6 ones');
  assert.deepEqual([proxySlot('http', 'egress', 'TCP', 6), proxySlot('http', 'ingress', 'TCP', 6), proxySlot('dns', 'egress', 'UDP', 6)], [16, 17, 50]);
  assert.deepEqual([out.DP_F_NO_SERVICES, out.DP_F_STRICT_INGRESS], [C.DP_F_NO_SERVICES, C.DP_F_STRICT_INGRESS]);
  assert.deepEqual([out.STAT_OVERLAY_DELIVER, out.STAT_NET_DELIVER], [C.STAT_NAMES.indexOf('overlayDelivered'), C.STAT_NAMES.indexOf('networkDelivered')]);
  assert.deepEqual([out.DP_F_TUNNEL, out.DP_F_IPV6, out.STAT_ND, out.STAT_WG_DELIVER], [C.DP_F_TUNNEL, C.DP_F_IPV6, C.STAT_NAMES.indexOf('neighbourDiscovery'), C.STAT_NAMES.indexOf('wireguardDelivered')]);
  assert.equal(out.dp_config, C.DP_CONFIG_SIZE);
  assert.deepEqual([out['dp_config.policy_rev'], out['dp_config.ev_interval_ns'], out['dp_config.ev_burst_ns'], out['dp_config.overlay_ifindex'], out['dp_config.monitor_aggregation'], out['dp_config.monitor_interval_s']], [0, 8, 16, 24, 28, 30]);
  assert.equal(out.STAT_OVERLAY_REDIRECT, C.STAT_NAMES.indexOf('overlayRedirects'));
  assert.equal(out.STAT_CT_HINTED, C.STAT_NAMES.indexOf('ctHinted'));
  assert.equal(out.STAT_LOCAL_DELIVER, C.STAT_NAMES.indexOf('localDelivered'));
  assert.equal(out.STAT_NATIVE_REDIRECT, C.STAT_NAMES.indexOf('nativeRedirects'));
  assert.equal(out.ev_bucket, C.EV_BUCKET_SIZE);
  assert.equal(out['ev_bucket.lost'], 8);
  assert.equal(out.mb_event, C.EVENT_SIZE);
  assert.deepEqual(
    ['type', 'subtype', 'ip_version', 'proto', 'ep_id', 'tcp_flags', 'ct_reason', 'ifindex', 'src_identity', 'dst_identity', 'sport', 'dport', 'saddr', 'daddr', 'icmp_type', 'icmp_code', 'direction', 'match_type', 'verdict', 'auth_type', 'flags', 'ethertype', 'length'].map((f) => out[`mb_event.${f}`]),
    [8, 9, 10, 11, 12, 14, 15, 16, 20, 24, 28, 30, 32, 48, 64, 65, 66, 67, 68, 72, 73, 74, 76],
  );
});
