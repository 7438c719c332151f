// The eBPF datapath for real: three pod namespaces joined to a node namespace, the datapath
// running inside the node namespace (a driver process spawned with nsenter --net), policy by
// identity and port, deny precedence, replies, spoofing, ICMP, events, and an agent restart.
// Needs root. Everything made here (mdp-* namespaces, /sys/fs/bpf/mdp-* pins) is removed in after().
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createTopo, tcpConnect, ping, spawnInNs, waitLine, killProc, sh, inNs, type Topo, type Pod } from './support/topo.ts';
import { Driver } from './support/rpc.ts';
import { destroy } from '../../../src/datapath/linux/index.ts';
import type { DatapathEvent } from '../../../src/datapath/types.ts';
import type { MapStateKey } from '../../../src/policy/types.ts';

const isRoot = process.getuid?.() === 0;
const tag = `t${process.pid % 100000}`;
const pinRoot = `/sys/fs/bpf/mdp-${tag}`;

type WireEntry = { key: MapStateKey; entry: { verdict: 'allow' | 'deny'; matchType?: number; authType?: number } };
const ingress = (identity: number, proto: number, port = 0, portPrefixLen = port ? 16 : 0, verdict: 'allow' | 'deny' = 'allow', matchType = 2): WireEntry =>
  ({ key: { direction: 'ingress', identity, proto, port, portPrefixLen }, entry: { verdict, matchType } });
const egress = (identity: number, proto: number, port = 0, portPrefixLen = port ? 16 : 0, verdict: 'allow' | 'deny' = 'allow', matchType = 2): WireEntry =>
  ({ key: { direction: 'egress', identity, proto, port, portPrefixLen }, entry: { verdict, matchType } });

describe('linux datapath (root, namespaces, eBPF)', { skip: !isRoot && 'needs root', concurrency: false }, () => {
  let topo: Topo;
  let d: Driver;
  let A: Pod, B: Pod, C: Pod;
  const procs: ChildProcess[] = [];
  const drivers: Driver[] = [];
  const idOf = (p: Pod) => 1000 + p.id;

  const reset = async () => {
    for (const p of topo.pods) await d.call('applyFull', p.id, [], { ingress: false, egress: false });
    await d.call('events', 0);
  };
  const events = (waitMs = 400): Promise<DatapathEvent[]> => d.call('events', waitMs);
  const find = (evs: DatapathEvent[], pred: (e: DatapathEvent) => boolean, what: string): DatapathEvent => {
    const e = evs.find(pred);
    assert.ok(e, `expected event: ${what}; got ${JSON.stringify(evs.map((x) => `${x.type}/${x.subType} ep${x.endpointId} ${x.srcIp}:${x.srcPort}->${x.dstIp}:${x.dstPort} p${x.proto} ct${x.ctReason} v${x.verdict}`))}`);
    return e;
  };

  before(async () => {
    topo = createTopo(tag, 3);
    [A, B, C] = topo.pods as [Pod, Pod, Pod];
    d = new Driver(topo.nodeNs, pinRoot);
    drivers.push(d);
    await d.call('start');
    for (const p of topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
    await d.call('upsertIPCache', [
      ...topo.pods.map((p) => ({ prefix: `${p.ip}/32`, identity: idOf(p), endpointId: p.id })),
      { prefix: '10.250.0.1/32', identity: 1 },
    ]);
    const sb = spawnInNs(B.ns, ['serve', '8080,9090', '5353']);
    const sa = spawnInNs(A.ns, ['serve', '7070', '']);
    procs.push(sb, sa);
    await Promise.all([waitLine(sb, /ready/), waitLine(sa, /ready/)]);
  });

  after(async () => {
    for (const p of procs) killProc(p);
    for (const x of drivers) await x.close().catch(() => {});
    destroy(pinRoot);
    topo?.destroy();
    sh('rm', ['-rf', pinRoot], { allowFail: true });
  });

  it('attaches pinned tcx links and reuses the same maps', async () => {
    for (const p of topo.pods) {
      assert.ok(existsSync(`${pinRoot}/links/${p.hostIf}-ingress`));
      assert.ok(existsSync(`${pinRoot}/links/${p.hostIf}-egress`));
    }
    for (const m of ['mb_policy', 'mb_ipcache', 'mb_ct', 'mb_events', 'mb_endpoints']) assert.ok(existsSync(`${pinRoot}/${m}`), m);
    const ipc = await d.call<{ prefix: string; identity: number }[]>('ipcacheDump');
    assert.ok(ipc.some((e) => e.prefix === `${B.ip}/32` && e.identity === idOf(B)));
  });

  it('allows by identity + port, default-denies the rest (133) with events', async () => {
    await reset();
    await d.call('applyFull', B.id, [ingress(idOf(A), 6, 8080)], { ingress: true, egress: false });
    const dump = await d.call<{ key: MapStateKey; matchType: number }[]>('policyDump', B.id);
    assert.equal(dump.length, 1);
    assert.equal(dump[0]!.matchType, 2);
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true, 'A -> B:8080 allowed');
    assert.equal(tcpConnect(A.ns, B.ip, 9090), false, 'A -> B:9090 default-denied');
    assert.equal(tcpConnect(C.ns, B.ip, 8080), false, 'C -> B:8080 default-denied (identity)');
    const evs = await events();
    const ok = find(evs, (e) => e.type === 5 && e.endpointId === B.id && e.dstPort === 8080 && e.srcIp === A.ip, 'verdict forward A->B:8080');
    assert.equal(ok.verdict, 0);
    assert.equal(ok.matchType, 2);
    assert.equal(ok.direction, 'ingress');
    assert.equal(ok.srcIdentity, idOf(A));
    assert.equal(ok.dstIdentity, idOf(B));
    assert.equal(ok.ifindex, B.ifindex);
    assert.equal(ok.proto, 6);
    assert.equal(ok.tcpFlags & 0x02, 0x02);
    assert.ok(ok.timeNs > BigInt(Date.now() - 60_000) * 1_000_000n && ok.timeNs < BigInt(Date.now() + 60_000) * 1_000_000n, 'wall-clock time');
    const tr = find(evs, (e) => e.type === 4 && e.subType === 0 && e.endpointId === B.id && e.ctReason === 1 && e.dstPort === 8080, 'trace to-endpoint NEW at B');
    assert.equal(tr.direction, 'ingress');
    find(evs, (e) => e.type === 4 && e.subType === 5 && e.endpointId === A.id && e.ctReason === 1 && e.dstPort === 8080, 'trace from-endpoint NEW at A');
    find(evs, (e) => e.type === 4 && e.endpointId === A.id && e.ctReason === 3 && e.srcPort === 8080 && (e.tcpFlags & 0x12) === 0x12, 'trace REPLY SYN-ACK at A');
    const v = find(evs, (e) => e.type === 5 && e.dstPort === 9090 && e.srcIp === A.ip && e.endpointId === B.id, 'verdict drop 9090');
    assert.equal(v.verdict, -133);
    const dr = find(evs, (e) => e.type === 1 && e.subType === 133 && e.srcIp === C.ip && e.dstPort === 8080, 'drop 133 C->B:8080');
    assert.equal(dr.srcIdentity, idOf(C));
    assert.equal(dr.direction, 'ingress');
  });

  it('deny beats allow in either lane (181); longest prefix and port ranges', async () => {
    await reset();
    // wildcard L3 allow + identity-lane deny for C on 8080
    await d.call('applyFull', B.id, [ingress(0, 0, 0, 0, 'allow', 1), ingress(idOf(C), 6, 8080, 16, 'deny')], { ingress: true, egress: false });
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true);
    assert.equal(tcpConnect(C.ns, B.ip, 8080), false);
    assert.equal(tcpConnect(C.ns, B.ip, 9090), true);
    let evs = await events();
    find(evs, (e) => e.type === 1 && e.subType === 181 && e.srcIp === C.ip && e.dstPort === 8080, 'drop 181 C->B:8080');
    find(evs, (e) => e.type === 5 && e.verdict === -181, 'policy verdict -181');
    // identity-0 lane deny beats a more specific identity-lane allow
    await d.call('applyFull', B.id, [ingress(idOf(A), 6, 9090, 16, 'allow'), ingress(0, 6, 9090, 16, 'deny'), ingress(idOf(A), 6, 8064, 10, 'allow')], { ingress: true, egress: false });
    assert.equal(tcpConnect(A.ns, B.ip, 9090), false, 'deny in wildcard lane wins');
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true, 'port range 8064/10 covers 8080');
    evs = await events();
    find(evs, (e) => e.type === 1 && e.subType === 181 && e.srcIp === A.ip && e.dstPort === 9090, 'drop 181 A->B:9090');
    // delta: remove the deny, 9090 opens; full sync removed the stale L3 allow, so C stays default-denied
    await d.call('applyDelta', B.id, [], [{ direction: 'ingress', identity: 0, proto: 6, port: 9090, portPrefixLen: 16 }]);
    assert.equal(tcpConnect(A.ns, B.ip, 9090), true);
    assert.equal(tcpConnect(C.ns, B.ip, 9090), false);
    const dump = await d.call<unknown[]>('policyDump', B.id);
    assert.equal(dump.length, 2);
    // longer prefix wins between lanes: wildcard lane tcp/8080 (L4) vs identity lane L3-only allow
    await d.call('applyFull', B.id, [ingress(idOf(A), 0, 0, 0, 'allow', 1), ingress(0, 6, 8080, 16, 'allow', 3)], { ingress: true, egress: false });
    await events(0);
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true);
    evs = await events();
    const v = find(evs, (e) => e.type === 5 && e.endpointId === B.id && e.dstPort === 8080, 'verdict');
    assert.equal(v.matchType, 3, 'the longer (L4) entry of the wildcard lane decides');
  });

  it('egress policy at from_container; replies pass through an ingress deny-all', async () => {
    await reset();
    // A: deny all ingress (no entries), egress only to B:8080
    await d.call('applyFull', A.id, [egress(idOf(B), 6, 8080)], { ingress: true, egress: true });
    const hold = spawnInNs(A.ns, ['hold', B.ip, '8080']);
    procs.push(hold);
    await waitLine(hold, /connected/);
    hold.stdin!.write('hello\n');
    assert.match(await waitLine(hold, /pong|fail/), /pong/, 'replies of an established connection pass');
    assert.equal(tcpConnect(A.ns, B.ip, 9090), false, 'egress default deny');
    assert.equal(tcpConnect(B.ns, A.ip, 7070), false, 'ingress deny-all');
    const evs = await events();
    find(evs, (e) => e.type === 1 && e.subType === 133 && e.endpointId === A.id && e.direction === 'egress' && e.dstPort === 9090, 'egress drop 133');
    find(evs, (e) => e.type === 1 && e.subType === 133 && e.endpointId === A.id && e.direction === 'ingress' && e.dstPort === 7070, 'ingress drop 133');
    const ct = await d.call<{ endpointId: number; direction: string; dstPort: number }[]>('conntrack');
    assert.ok(ct.some((c) => c.endpointId === A.id && c.direction === 'egress' && c.dstPort === 8080), 'CT entry at A (egress)');
    assert.ok(ct.some((c) => c.endpointId === B.id && c.direction === 'ingress' && c.dstPort === 8080), 'CT entry at B (ingress)');
    hold.stdin!.end();
    killProc(hold);
  });

  it('drops spoofed source addresses (132)', async () => {
    await reset();
    sh('ip', ['-n', A.ns, 'addr', 'add', '10.250.1.99/32', 'dev', 'eth0']);
    try {
      assert.equal(ping(A.ns, B.ip), true);
      assert.equal(ping(A.ns, B.ip, '10.250.1.99'), false);
      const evs = await events();
      const e = find(evs, (x) => x.type === 1 && x.subType === 132 && x.srcIp === '10.250.1.99', 'drop 132');
      assert.equal(e.endpointId, A.id);
      assert.equal(e.proto, 1);
      assert.equal(e.icmpType, 8);
    } finally {
      sh('ip', ['-n', A.ns, 'addr', 'del', '10.250.1.99/32', 'dev', 'eth0'], { allowFail: true });
    }
  });

  it('ICMP echo by type; related ICMP errors pass an ingress deny-all', async () => {
    await reset();
    await d.call('applyFull', B.id, [ingress(idOf(A), 1, 8, 16), ingress(idOf(A), 17, 0, 0)], { ingress: true, egress: false });
    await d.call('applyFull', A.id, [], { ingress: true, egress: false });
    assert.equal(ping(A.ns, B.ip), true, 'echo request type 8 allowed, reply passes A ingress deny-all');
    assert.equal(ping(C.ns, B.ip), false, 'C not allowed');
    let evs = await events();
    find(evs, (e) => e.type === 4 && e.endpointId === A.id && e.ctReason === 3 && e.proto === 1 && e.icmpType === 0, 'echo reply traced as REPLY');
    find(evs, (e) => e.type === 1 && e.subType === 133 && e.srcIp === C.ip && e.proto === 1, 'C echo dropped');
    // UDP to a closed port: B answers port-unreachable, which reaches A only as RELATED
    const r = JSON.parse(inNs(A.ns, ['udp', B.ip, '5454', '1000'])) as { ok: boolean; err?: string };
    assert.equal(r.err, 'ECONNREFUSED', `ICMP port unreachable delivered: ${JSON.stringify(r)}`);
    evs = await events();
    const rel = find(evs, (e) => e.type === 4 && e.endpointId === A.id && e.ctReason === 4, 'RELATED trace at A');
    assert.equal(rel.proto, 1);
    assert.equal(rel.icmpType, 3);
    assert.equal(rel.icmpCode, 3);
    assert.equal(rel.srcIp, B.ip);
  });

  it('steers L7 connections to the proxy listener with bpf_sk_assign; fails closed (178) without one', async () => {
    await reset();
    sh('ip', ['-n', topo.nodeNs, 'rule', 'add', 'fwmark', '0x200/0xf00', 'lookup', '2004']);
    sh('ip', ['-n', topo.nodeNs, 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '2004']);
    const http = { parser: 'http', perSelector: [] };
    await d.call('applyFull', A.id, [{ key: { direction: 'egress', identity: idOf(B), proto: 6, port: 8080, portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2, l7: http } }, egress(idOf(B), 6, 9090)], { ingress: false, egress: true });
    let r = JSON.parse(inNs(A.ns, ['read', B.ip, '8080', '800'])) as { ok: boolean; line?: string };
    assert.equal(r.ok, false, 'no proxy listener: fail closed');
    let evs = await events();
    find(evs, (e) => e.type === 1 && e.subType === 178 && e.endpointId === A.id && e.dstPort === 8080, 'drop 178 (no proxy listener)');
    await d.call('proxyListen', 15001, 0);
    try {
      r = JSON.parse(inNs(A.ns, ['read', B.ip, '8080', '1500'])) as { ok: boolean; line?: string };
      assert.deepEqual(r, { ok: true, line: `proxied ${B.ip}:8080` }, 'the proxy accepted the connection and sees the original destination');
      assert.equal(tcpConnect(A.ns, B.ip, 9090), true, 'non-L7 entry goes straight to the server');
      evs = await events();
      const v = find(evs, (e) => e.type === 5 && e.endpointId === A.id && e.dstPort === 8080 && e.verdict > 0, 'redirect verdict');
      assert.equal(v.verdict, 15001);
      const c = await d.call<Record<string, string>>('counters');
      assert.ok(BigInt(c.proxyRedirects!) > 0n);
    } finally {
      await d.call('proxyClose', 0);
    }
  });

  it('keeps enforcing while the agent is down; a new agent reuses the maps and reads the backlog', async () => {
    await reset();
    await d.call('applyFull', B.id, [ingress(idOf(A), 6, 8080)], { ingress: true, egress: false });
    const hold = spawnInNs(A.ns, ['hold', B.ip, '8080']);
    procs.push(hold);
    await waitLine(hold, /connected/);
    hold.stdin!.write('one\n');
    assert.match(await waitLine(hold, /pong|fail/), /pong/);
    const before = await d.call<{ programs: { runCount: string }[] }>('stats');
    assert.ok(BigInt(before.programs[0]!.runCount) > 0n, 'run-time stats enabled');
    await d.close(); // stop(): the agent is gone

    const links = execFileSync('bpftool', ['link', 'show']).toString();
    assert.match(links, /type 11|tcx/);
    hold.stdin!.write('two\n');
    assert.match(await waitLine(hold, /pong|fail/), /pong/, 'established connection survives');
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true, 'allowed while agent down');
    assert.equal(tcpConnect(C.ns, B.ip, 8080), false, 'denied while agent down');

    const d2 = new Driver(topo.nodeNs, pinRoot);
    drivers.push(d2);
    d = d2;
    await d2.call('start');
    const dump = await d2.call<unknown[]>('policyDump', B.id);
    assert.equal(dump.length, 1, 'policy map reused');
    const evs = await events(500);
    find(evs, (e) => e.type === 1 && e.subType === 133 && e.srcIp === C.ip && e.dstPort === 8080, 'drop produced while no agent ran');
    find(evs, (e) => e.type === 5 && e.srcIp === A.ip && e.dstPort === 8080 && e.verdict === 0, 'verdict produced while no agent ran');
    // re-attach (atomic program swap on the pinned links) keeps everything working
    for (const p of topo.pods) await d2.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex });
    hold.stdin!.write('three\n');
    assert.match(await waitLine(hold, /pong|fail/), /pong/);
    assert.equal(tcpConnect(C.ns, B.ip, 8080), false, 'default deny flag survived re-attach');
    hold.stdin!.end();
    killProc(hold);
  });

  it('removeEndpoint detaches and forgets policy', async () => {
    await d.call('applyFull', B.id, [ingress(idOf(A), 6, 8080)], { ingress: true, egress: false });
    assert.equal(tcpConnect(C.ns, B.ip, 8080), false);
    await d.call('removeEndpoint', B.id);
    assert.equal(existsSync(`${pinRoot}/links/${B.hostIf}-ingress`), false);
    assert.equal(tcpConnect(C.ns, B.ip, 8080), true);
    assert.equal((await d.call<unknown[]>('policyDump', B.id)).length, 0);
    const st = await d.call<{ eventsLost: string }>('stats');
    assert.equal(st.eventsLost, '0');
  });
});
