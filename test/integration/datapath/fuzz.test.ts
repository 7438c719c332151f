// Datapath fuzzing with real frames: a seeded stream of random and malformed frames from a pod
// (ethertypes, VLAN tag stacks, IP options, bad lengths and checksums, fragments, ICMP errors
// with crafted inner headers) whose policy allows only one destination. Captures at the
// forbidden destinations (another pod, an outside host) must stay empty of IPv4, the kernel
// programs keep running (the allowed connection still works afterwards), and every drop the
// programs report carries a known Cilium drop reason (and the addresses, when the IPv4 header was
// readable). A second pass aims at the state the datapath keeps: ICMP errors quoting a live
// connection sent to its peer and to others, fragment trains in and out of order; only the peer
// and allowed datagrams may be reached and the connection survives. Bounded: FUZZ_FRAMES frames
// (default 3000; the second pass a third of it), seed FUZZ_SEED. Needs root.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { gatewayMac, tcpConnect, spawnInNs, waitLine, sh, inNs, type Topo, type Pod, type World } from './support/topo.ts';
import type { Driver } from './support/rpc.ts';
import { DatapathNode } from './support/node.ts';
import type { DatapathEvent } from '../../../src/datapath/types.ts';
import { sendFrames, startCapture, ensureRawpkt, ETH_IP, TCP, UDP, ICMP, type Parsed } from '../support/frames.ts';
import { frameArb, targetedArb } from './support/fuzz-frames.ts';

const isRoot = process.getuid?.() === 0;
// every drop reported: no event budget
const node = new DatapathNode({ prefix: 'z', pods: 3, subnet: 4, identityBase: 4000, worldIp: '10.250.9.2', driverOptions: { eventRate: { perSecond: 0, burst: 0 } } });
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
  const procs = node.procs;
  const idOf = (p: Pod) => node.idOf(p);

  before(async () => {
    ensureRawpkt();
    await node.up();
    ({ topo, world, d } = node);
    [A, B, C] = topo.pods as [Pod, Pod, Pod];
    await node.serve([B.ns, '8080', '5353']);
  });

  after(() => node.down());

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
  it('frames aimed at kept state (ICMP errors quoting a live connection, fragment trains): only the connection\'s peer and allowed datagrams are reached', async () => {
    const N = Math.max(200, Math.floor(FRAMES / 3));
    const live = spawnInNs(A.ns, ['hold', B.ip, '8080']);
    procs.push(live);
    await waitLine(live, /connected/);
    live.stdin!.write('hi\n');
    assert.match(await waitLine(live, /pong|fail/), /pong/, 'the live connection works');
    const ct = await d.call<{ srcIp: string; dstIp: string; srcPort: number; dstPort: number; direction: string }[]>('conntrack');
    const sport = ct.find((c) => c.srcIp === A.ip && c.dstIp === B.ip && c.dstPort === 8080 && c.direction === 'egress')?.srcPort;
    assert.ok(sport, 'the live connection is in conntrack');
    // a later fragment may follow a first fragment the previous test let through: those IP ids are left out
    const known = new Set((await d.call<{ srcPort: number }[]>('fragments')).map((f) => f.srcPort));
    const seen = new Set<number>();
    const trains = fc.sample(targetedArb({ A, B, C, world, gw: gatewayMac(topo, A), node: '10.250.0.1' }, { sport, dport: 8080 }), { numRuns: N, seed: SEED }).filter((t) => {
      const f = t[0]!;
      if ((f.readUInt16BE(14 + 6) & 0x3fff) === 0) return true; // not a fragment
      const id = f.readUInt16BE(14 + 4);
      if (known.has(id) || seen.has(id)) return false;
      seen.add(id);
      return true;
    });
    const frames = trains.flat();
    await d.call('events', 0);
    const atB = await startCapture(B.ns, 'eth0', 120_000);
    const atC = await startCapture(C.ns, 'eth0', 120_000);
    const atWorld = await startCapture(world.ns, 'eth0', 120_000);
    let got: { b: Parsed[]; c: Parsed[]; w: Parsed[] };
    try {
      assert.equal(sendFrames(A.ns, 'eth0', frames), frames.length);
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      got = { b: await atB.stop(), c: await atC.stop(), w: await atWorld.stop() };
    }
    const fromA = (f: Parsed) => f.dir === 'in' && f.ip?.src === A.ip;
    assert.deepEqual([...got.c, ...got.w].filter(fromA).map((f) => `${f.ip?.dst} p${f.ip?.proto} ${f.sport}->${f.dport} icmp ${f.icmpType}`), [],
      `no IPv4 from A reached the forbidden pod or the outside host (seed ${SEED})`);
    // B gets only what A's policy allows, later fragments of allowed first ones, and errors that
    // quote a connection between A and B: the live one, or the trains' allowed UDP datagrams
    // (B's echo answers them; A's kernel has no socket there and reports port unreachable)
    const liveTuple = new Set([`${TCP} ${B.ip}:8080>${A.ip}:${sport}`, `${TCP} ${A.ip}:${sport}>${B.ip}:8080`, `${UDP} ${B.ip}:5353>${A.ip}:40000`]);
    const allowedFirst = new Set<number>();
    const bad: string[] = [];
    let related = 0, fragsAfterFirst = 0;
    for (const f of got.b.filter(fromA)) {
      const ip = f.ip!;
      if (ip.fragOffset > 0) {
        if (allowedFirst.has(ip.id)) { fragsAfterFirst++; continue; }
        bad.push(`later fragment id ${ip.id} without an allowed first one`);
      } else if ((ip.proto === TCP && f.dport === 8080) || (ip.proto === UDP && f.dport === 5353)) {
        if (ip.mf) allowedFirst.add(ip.id);
      } else if (ip.proto === ICMP && [3, 11, 12].includes(f.icmpType!)) {
        const b = Buffer.from(f.hex, 'hex');
        const q = 14 + (b[14]! & 0x0f) * 4 + 8;
        const q4 = q + (b[q]! & 0x0f) * 4;
        const addr = (o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
        const t = `${b[q + 9]} ${addr(q + 12)}:${b.readUInt16BE(q4)}>${addr(q + 16)}:${b.readUInt16BE(q4 + 2)}`;
        if (liveTuple.has(t)) { related++; continue; }
        bad.push(`ICMP ${f.icmpType} quoting ${t}`);
      } else bad.push(`p${ip.proto} ${f.sport}->${f.dport} icmp ${f.icmpType}`);
    }
    assert.deepEqual(bad, [], `B got what A's policy forbids (seed ${SEED})`);
    assert.ok(related > 0, 'positive control: errors quoting the live connection reached its peer');
    assert.ok(fragsAfterFirst > 0, 'positive control: later fragments of allowed datagrams arrived');
    live.stdin!.write('still\n');
    assert.match(await waitLine(live, /pong|fail/), /pong/, 'the live connection survived the crafted errors');
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true, 'allowed after');
    assert.equal(tcpConnect(A.ns, C.ip, 8080), false, 'denied after');
    const drops = (await d.call<DatapathEvent[]>('events', 500)).filter((e) => e.type === 1 && e.endpointId === A.id);
    assert.deepEqual(drops.filter((e) => !KNOWN_REASONS.has(e.subType)).map((e) => e.subType), [], 'every drop reason is one of Cilium\'s');
    const reasons = [...new Set(drops.map((e) => e.subType))].sort((a, b) => a - b);
    for (const want of [133, 175]) assert.ok(reasons.includes(want), `reason ${want} among ${reasons}`);
    live.stdin!.end();
    process.stdout.write(`# targeted: ${frames.length} frames in ${trains.length} trains (seed ${SEED}); ${related} related errors and ${fragsAfterFirst} later fragments reached B; drop reasons ${reasons.join(',')}\n`);
  });
});
