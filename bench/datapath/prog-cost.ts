// The eBPF programs' own cost per packet, without the machine's load in it: the kernel runs
// from_container and to_container on crafted TCP SYNs (BPF_PROG_TEST_RUN, bench/datapath/progrun.c)
// in the bench's topology (two pods, conntrack, ipcache, events as in production), n new
// connections then n times one established connection's packet, and reports the 10th percentile
// and median of the kernel's per-run duration. Rates under load 15-45 scatter 2x; these do not.
// --object <path.o> loads another build (a scratch variant) in place of dist/bpf/endpoint.bpf.o;
// --ipcache N adds N remote pods' /32 entries (a cluster's ipcache: 10,000 nodes x 30 pods is 300,000).
//   bin/node bench/datapath/prog-cost.ts [--n 2000] [--entries 10,10000,10] [--ipcache 0]
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createTopo, type Pod } from '../../test/integration/datapath/support/topo.ts';
import { Driver } from '../../test/integration/datapath/support/rpc.ts';
import { destroy, linkPinPath } from '../../src/datapath/linux/index.ts';

const { values } = parseArgs({ options: { n: { type: 'string', default: '2000' }, entries: { type: 'string', default: '10,10000,10' }, ipcache: { type: 'string', default: '0' }, object: { type: 'string' } } });
const n = Number(values.n);
const bin = `/tmp/mbr-progrun-${process.pid}`;
execFileSync('cc', ['-O2', '-o', bin, join(import.meta.dirname, 'progrun.c'), '-lbpf']);
const tag = `bp${process.pid % 10000}`;
const pinRoot = `/sys/fs/bpf/mdp-${tag}`;
const topo = createTopo(tag, 2, 8);
const [A, B] = topo.pods as [Pod, Pod];
const driver = new Driver(topo.nodeNs, pinRoot, values.object ? { objectPath: values.object } : undefined);
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
  for (const p of topo.pods) await driver.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex });
  await driver.call('applyFull', A.id, [], { ingress: false, egress: false });
  let sport = 10000;
  for (const entries of String(values.entries).split(',').map(Number)) {
    const es: unknown[] = [5201, 7001, 7002].map((port) => ({ key: { direction: 'ingress', identity: idOf(A), proto: 6, port, portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } }));
    for (let i = es.length; i < entries; i++) es.push({ key: { direction: 'ingress', identity: 100000 + i, proto: 6, port: 1 + (i % 60000), portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } });
    await driver.call('applyFull', B.id, es, { ingress: true, egress: false });
    const run = (p: Pod, dir: 'ingress' | 'egress', dst = B.ip, mark = 0) => execFileSync('nsenter', [`--net=/run/netns/${topo.nodeNs}`, bin, linkPinPath(pinRoot, p.hostIf, dir), String(p.ifindex), A.ip, dst, '7002', String(n), String(sport), String(mark)], { encoding: 'utf8' }).trim();
    const from = run(A, 'ingress');
    // with the mark A's from_container gives a packet for a local destination it judged
    // (MARK_MAGIC_LOCAL_EP, A's endpoint id in the upper half; a build that does not set it ignores it)
    const to = run(B, 'egress', B.ip, ((A.id << 16) | 0xf00) >>> 0);
    // a pod on another node (the last of the remote entries: deep in the trie)
    const far = remote ? ` | from_container to a remote pod ${run(A, 'ingress', `10.${100 + ((remote - 1) >> 16)}.${((remote - 1) >> 8) & 255}.${(remote - 1) & 255}`)}` : '';
    sport += n;
    process.stdout.write(`${entries} policy entries, ${remote} remote ipcache entries (load ${loadavg()[0]!.toFixed(1)}): from_container ${from} | to_container ${to}${far}\n`);
  }
} finally {
  await driver.close().catch(() => {});
  destroy(pinRoot);
  topo.destroy();
  execFileSync('rm', ['-f', bin]);
}
