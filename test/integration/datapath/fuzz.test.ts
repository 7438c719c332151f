// Datapath fuzzing with real frames: a seeded stream of random and malformed frames from a pod
// (ethertypes, VLAN tag stacks, IP options, bad lengths and checksums, fragments, ICMP errors
// with crafted inner headers) whose policy allows only one destination. Captures at the
// forbidden destinations (another pod, an outside host) must stay empty of IPv4, the kernel
// programs keep running (the allowed connection still works afterwards), and every drop the
// programs report carries a known Cilium drop reason (and the addresses, when the IPv4 header was
// readable). Bounded: FUZZ_FRAMES frames (default 3000), seed FUZZ_SEED. Needs root.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ChildProcess } from 'node:child_process';
import { createTopo, createWorld, gatewayMac, tcpConnect, spawnInNs, waitLine, killProc, sh, inNs, type Topo, type Pod, type World } from './support/topo.ts';
import { Driver } from './support/rpc.ts';
import { destroy } from '../../../src/datapath/linux/index.ts';
import type { DatapathEvent } from '../../../src/datapath/types.ts';
import { sendFrames, startCapture, ensureRawpkt, ETH_IP, TCP, UDP, type Parsed } from '../support/frames.ts';
import { frameArb } from './support/fuzz-frames.ts';

const isRoot = process.getuid?.() === 0;
const tag = `z${process.pid % 100000}`;
const pinRoot = `/sys/fs/bpf/mdp-${tag}`;
const FRAMES = Number(process.env.FUZZ_FRAMES ?? 3000);
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed1);
/** Drop reasons the programs may report (Cilium's numbers, bpf/lib/common.h). */
const KNOWN_REASONS = new Set([132, 133, 134, 135, 139, 155, 158, 175, 178, 179, 180, 181, 189, 190, 203]);
/** Reasons given after the IPv4 header was read: their drops carry the packet's addresses. */
const ADDRESSED = new Set([132, 133, 134, 135, 175, 181]);

describe('datapath fuzz (root, namespaces, eBPF, raw frames)', { skip: !isRoot && 'needs root', concurrency: false }, () => {
  let topo: Topo;
  let world: World;
  let d: Driver;
  let A: Pod, B: Pod, C: Pod;
  const procs: ChildProcess[] = [];
  const idOf = (p: Pod) => 4000 + p.id;

  before(async () => {
    ensureRawpkt();
    topo = createTopo(tag, 3, 4);
    [A, B, C] = topo.pods as [Pod, Pod, Pod];
    world = createWorld(topo, '10.250.9.2');
    d = new Driver(topo.nodeNs, pinRoot, { eventRate: { perSecond: 0, burst: 0 } }); // every drop reported
    await d.call('start');
    for (const p of topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
    await d.call('upsertIPCache', [...topo.pods.map((p) => ({ prefix: `${p.ip}/32`, identity: idOf(p), endpointId: p.id })), { prefix: '10.250.0.1/32', identity: 1 }]);
    assert.equal(await d.call('attachNetworkDevice', world.ifname), true);
    const sb = spawnInNs(B.ns, ['serve', '8080', '5353']);
    procs.push(sb);
    await waitLine(sb, /ready/);
  });

  after(async () => {
    for (const p of procs) killProc(p);
    await d?.close().catch(() => {});
    destroy(pinRoot);
    world?.destroy();
    topo?.destroy();
    sh('rm', ['-rf', pinRoot], { allowFail: true });
  });

  it(`${FRAMES} random and malformed frames: nothing reaches what the policy forbids, the programs keep running, drops carry reasons`, async () => {
    // A may reach B on TCP 8080 and UDP 5353, nothing else; nothing may connect to A
    const allow = (proto: number, port: number) => ({ key: { direction: 'egress', identity: idOf(B), proto, port, portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } });
    await d.call('applyFull', A.id, [allow(TCP, 8080), allow(UDP, 5353)], { ingress: true, egress: true });
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true, 'positive control before');
    assert.equal(tcpConnect(A.ns, C.ip, 8080), false, 'negative control before');
    await d.call('events', 0);
    const c0 = await d.call<Record<string, string>>('counters');
    const frames = fc.sample(frameArb({ A, B, C, world, gw: gatewayMac(topo, A), node: '10.250.0.1' }), { numRuns: FRAMES, seed: SEED });
    const atC = await startCapture(C.ns, 'eth0', 120_000);
    const atWorld = await startCapture(world.ns, 'eth0', 120_000);
    const t0 = Date.now();
    let got: { c: Parsed[]; w: Parsed[] };
    try {
      assert.equal(sendFrames(A.ns, 'eth0', frames), FRAMES);
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      got = { c: await atC.stop(), w: await atWorld.stop() };
    }
    const ms = Date.now() - t0;
    const leaked = [...got.c, ...got.w].filter((f) => f.dir === 'in' && f.ethertype === ETH_IP);
    assert.deepEqual(leaked.map((f) => `${f.ip?.src}->${f.ip?.dst} p${f.ip?.proto} ${f.sport}->${f.dport}`), [], `no IPv4 reached the forbidden pod or the outside host (seed ${SEED})`);
    // the programs survived: counters moved, the links are there, the allowed path still works
    const c1 = await d.call<Record<string, string>>('counters');
    assert.ok(BigInt(c1.pktsFromEndpoint!) - BigInt(c0.pktsFromEndpoint!) >= BigInt(FRAMES) / 2n, 'the programs saw the frames');
    assert.ok(BigInt(c1.drop!) > BigInt(c0.drop!), 'and dropped many');
    assert.match(sh('bpftool', ['link', 'show']), /tcx|type 11/);
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true, 'positive control after: the allowed connection works');
    assert.equal(tcpConnect(A.ns, C.ip, 8080), false, 'negative control after');
    const r = JSON.parse(inNs(A.ns, ['udp', B.ip, '5353', '1500'])) as { ok: boolean };
    assert.equal(r.ok, true, 'UDP to the allowed port and its answer');
    // every drop has a known reason; those of readable IPv4 headers carry their addresses
    const evs = await d.call<DatapathEvent[]>('events', 500);
    const drops = evs.filter((e) => e.type === 1 && e.endpointId === A.id);
    assert.ok(drops.length > FRAMES / 2, `drops were reported: ${drops.length}`);
    assert.equal(BigInt(await d.call<string>('eventsLost')), 0n, 'none lost (this datapath has no event budget)');
    const unknown = drops.filter((e) => !KNOWN_REASONS.has(e.subType));
    assert.deepEqual(unknown.map((e) => e.subType), [], 'every drop reason is one of Cilium\'s');
    const bare = drops.filter((e) => ADDRESSED.has(e.subType) && (e.srcIp === '0.0.0.0' || e.dstIp === '0.0.0.0'));
    assert.deepEqual(bare.map((e) => e.subType), [], 'drops after the IPv4 header was read carry addresses');
    const reasons = [...new Set(drops.map((e) => e.subType))].sort((a, b) => a - b);
    for (const want of [132, 133, 134, 135, 139]) assert.ok(reasons.includes(want), `the fuzz reached reason ${want}: ${reasons}`);
    process.stdout.write(`# fuzz: ${FRAMES} frames (seed ${SEED}) in ${ms} ms; drop reasons seen ${reasons.join(',')}; ${drops.length} drop events delivered\n`);
  });
});
