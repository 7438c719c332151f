// The eBPF programs' own cost per packet, without the machine's load in it: the kernel runs
// from_container and to_container on crafted TCP SYNs (BPF_PROG_TEST_RUN, bench/datapath/progrun.c)
// in the bench's topology (two pods, conntrack, ipcache, events as in production), n new
// connections then n times one established connection's packet, and reports the 10th percentile
// and median of the kernel's per-run duration. Rates under load 15-45 scatter 2x; these do not.
// --object <path.o> loads another build (a scratch variant) in place of dist/bpf/endpoint.bpf.o;
// --ipcache N adds N remote pods' /32 entries (a cluster's ipcache: 10,000 nodes x 30 pods is 300,000).
// --tunnel: routing mode tunnel (a VXLAN device in external mode with the overlay programs, as the
// agent sets it up) and a pod on another node: from_container to it (the tunnel key, the redirect
// into the VXLAN device) and to_container of its packets to B (a connection opened from outside the
// node's endpoints: the entry in B's CT_EXT table), each with and without the hint mark from_overlay
// gives the packets it delivers. from_overlay itself cannot run here: BPF_PROG_TEST_RUN gives a
// packet no tunnel metadata, so bpf_skb_get_tunnel_key fails (bench/cluster reads its cost from the
// kernel's BPF stats instead).
// --full: also A's new connections into a full conntrack table (every insert evicts, as under CRR,
// where closed entries live 10 s), after 8,192 more connections have filled it.
//   bin/node bench/datapath/prog-cost.ts [--n 2000] [--entries 10,10000,10] [--ipcache 0] [--tunnel] [--full]
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createTopo, type Pod } from '../../test/integration/datapath/support/topo.ts';
import { Driver } from '../../test/integration/datapath/support/rpc.ts';
import { destroy, linkPinPath } from '../../src/datapath/linux/index.ts';

const { values } = parseArgs({ options: { n: { type: 'string', default: '2000' }, entries: { type: 'string', default: '10,10000,10' }, ipcache: { type: 'string', default: '0' }, object: { type: 'string' }, tunnel: { type: 'boolean', default: false }, full: { type: 'boolean', default: false } } });
const n = Number(values.n);
const bin = `/tmp/mbr-progrun-${process.pid}`;
execFileSync('cc', ['-O2', '-o', bin, join(import.meta.dirname, 'progrun.c'), '-lbpf']);
const tag = `bp${process.pid % 10000}`;
const pinRoot = `/sys/fs/bpf/mdp-${tag}`;
const topo = createTopo(tag, 2, 8);
const [A, B] = topo.pods as [Pod, Pod];
const tunnel = values.tunnel === true;
const VX = `mbvx${tag.slice(2)}`;
if (tunnel) {
  execFileSync('ip', ['-n', topo.nodeNs, 'link', 'add', VX, 'type', 'vxlan', 'external', 'dstport', '8472']);
  execFileSync('ip', ['-n', topo.nodeNs, 'link', 'set', VX, 'up']);
}
const driver = new Driver(topo.nodeNs, pinRoot, { ...(values.object ? { objectPath: values.object } : {}), ...(tunnel ? { tunnel: true } : {}) });
// the pod on another node (--tunnel) and its node's underlay address
const FAR = '10.99.0.2', FAR_NODE = '192.0.2.1', FAR_ID = 4000;
try {
  await driver.call('start');
  await driver.call('mute');
  const idOf = (p: Pod) => 2000 + p.id;
  await driver.call('upsertIPCache', topo.pods.map((p) => ({ prefix: `${p.ip}/32`, identity: idOf(p), endpointId: p.id })));
  const remote = Number(values.ipcache);
  for (let at = 0; at < remote; at += 20000) {
    const batch = Array.from({ length: Math.min(20000, remote - at) }, (_, j) => {
      const i = at + j;
      return { prefix: `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`, identity: 300000 + (i % 5000), tunnelEndpoint: `192.0.${2 + ((i >> 16) & 1)}.${1 + ((i >> 5) % 250)}` };
    });
    await driver.call('upsertIPCache', batch);
  }
  if (tunnel) {
    await driver.call('upsertIPCache', [{ prefix: `${FAR_NODE}/32`, identity: 6, tunnelEndpoint: FAR_NODE }, { prefix: `${FAR}/32`, identity: FAR_ID, tunnelEndpoint: FAR_NODE }]);
    if (!await driver.call('attachOverlayDevice', VX)) throw new Error('overlay device not attached');
  }
  for (const p of topo.pods) await driver.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex });
  await driver.call('applyFull', A.id, [], { ingress: false, egress: false });
  // source ports of each run's connections, by pair (16 bits: n 2000 and three entry counts fit)
  let sport = 10000, fullSport = 20000, farSport = 52000;
  for (const entries of String(values.entries).split(',').map(Number)) {
    const es: unknown[] = [5201, 7001, 7002].map((port) => ({ key: { direction: 'ingress', identity: idOf(A), proto: 6, port, portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } }));
    if (tunnel) es.push({ key: { direction: 'ingress', identity: FAR_ID, proto: 6, port: 7002, portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } });
    for (let i = es.length; i < entries; i++) es.push({ key: { direction: 'ingress', identity: 100000 + i, proto: 6, port: 1 + (i % 60000), portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } });
    await driver.call('applyFull', B.id, es, { ingress: true, egress: false });
    const run = (p: Pod, dir: 'ingress' | 'egress', dst = B.ip, mark = 0, src = A.ip, count = n, sp = sport) => execFileSync('nsenter', [`--net=/run/netns/${topo.nodeNs}`, bin, linkPinPath(pinRoot, p.hostIf, dir), String(p.ifindex), src, dst, '7002', String(count), String(sp), String(mark)], { encoding: 'utf8' }).trim();
    const from = run(A, 'ingress');
    // with the mark A's from_container gives a packet for a local destination it judged
    // (MARK_MAGIC_LOCAL_EP, A's endpoint id in the upper half; a build that does not set it ignores it)
    const to = run(B, 'egress', B.ip, ((A.id << 16) | 0xf00) >>> 0);
    // a pod on another node (the last of the remote entries: deep in the trie)
    const far = remote ? ` | from_container to a remote pod ${run(A, 'ingress', `10.${100 + ((remote - 1) >> 16)}.${((remote - 1) >> 8) & 255}.${(remote - 1) & 255}`)}` : '';
    sport += n;
    let more = '';
    if (tunnel) {
      more += ` | from_container to a pod behind the tunnel ${run(A, 'ingress', FAR)}`;
      // B's packets from the remote pod: as the stack hands them over (no mark), and as
      // from_overlay's redirect does (the hint: the entry is in B's CT_EXT table; a build that
      // does not set it ignores it). Each on its own connections: the first pass creates them.
      more += ` | to_container from the remote pod ${run(B, 'egress', B.ip, 0, FAR, n, farSport)}`;
      more += ` | the same, hinted ${run(B, 'egress', B.ip, 0xf00, FAR, n, farSport + n)}`;
      farSport += 2 * n;
    }
    if (values.full) {
      run(A, 'ingress', B.ip, 0, A.ip, 8192, fullSport); // fills A's table: every later insert evicts
      more += ` | from_container, A's table full ${run(A, 'ingress', B.ip, 0, A.ip, n, fullSport + 8192)}`;
      fullSport += 8192 + n;
    }
    process.stdout.write(`${entries} policy entries, ${remote} remote ipcache entries (load ${loadavg()[0]!.toFixed(1)}): from_container ${from} | to_container ${to}${far}${more}\n`);
  }
} finally {
  await driver.close().catch(() => {});
  destroy(pinRoot);
  topo.destroy();
  execFileSync('rm', ['-f', bin]);
}
