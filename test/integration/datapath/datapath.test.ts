// The eBPF datapath for real: three pod namespaces joined to a node namespace, the datapath
// running inside the node namespace (a driver process spawned with nsenter --net), policy by
// identity and port, deny precedence, replies, spoofing, ICMP, events, and an agent restart.
// Needs root. Everything made here (mdp-* namespaces, /sys/fs/bpf/mdp-* pins) is removed in after().
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from '../../support/requirements.ts';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createWorld, tcpConnect, ping, spawnInNs, waitLine, killProc, sh, inNs, type Topo, type Pod } from './support/topo.ts';
import type { Driver } from './support/rpc.ts';
import { DatapathNode } from './support/node.ts';
import type { DatapathEvent } from '../../../src/datapath/types.ts';
import type { MapStateKey } from '../../../src/policy/types.ts';
import { BpfMap } from '../../../src/sys/bpf.ts';
import { DP_F_NO_SERVICES, EP_F_NO_POLICY_EGRESS, EP_F_NO_POLICY_INGRESS, decodeDpConfig, decodeEpConfig, encodeU32, lbVipBit } from '../../../src/datapath/linux/codec.ts';

const node = new DatapathNode({ prefix: 't', pods: 3, identityBase: 1000 });
const { pinRoot } = node;

type WireEntry = { key: MapStateKey; entry: { verdict: 'allow' | 'deny'; matchType?: number; authType?: number } };
const ingress = (identity: number, proto: number, port = 0, portPrefixLen = port ? 16 : 0, verdict: 'allow' | 'deny' = 'allow', matchType = 2): WireEntry =>
  ({ key: { direction: 'ingress', identity, proto, port, portPrefixLen }, entry: { verdict, matchType } });
const egress = (identity: number, proto: number, port = 0, portPrefixLen = port ? 16 : 0, verdict: 'allow' | 'deny' = 'allow', matchType = 2): WireEntry =>
  ({ key: { direction: 'egress', identity, proto, port, portPrefixLen }, entry: { verdict, matchType } });

describe('linux datapath (root, namespaces, eBPF)', { skip: skipUnless('root'), concurrency: false }, () => {
  let topo: Topo;
  let d: Driver;
  let A: Pod, B: Pod, C: Pod;
  const procs = node.procs;
  const idOf = (p: Pod) => node.idOf(p);
  const reset = () => node.reset();
  const events = (waitMs = 400): Promise<DatapathEvent[]> => node.events(waitMs);
  const find = (evs: DatapathEvent[], pred: (e: DatapathEvent) => boolean, what: string): DatapathEvent => node.find(evs, pred, what);

  before(async () => {
    await node.up();
    ({ topo, d } = node);
    [A, B, C] = topo.pods as [Pod, Pod, Pod];
    await node.serve([B.ns, '8080,9090', '5353'], [A.ns, '7070', '']);
  });

  after(() => node.down());

  it('attaches pinned tcx links and reuses the same maps', async () => {
    for (const p of topo.pods) {
      assert.ok(existsSync(`${pinRoot}/links/${p.hostIf}-ingress`));
      assert.ok(existsSync(`${pinRoot}/links/${p.hostIf}-egress`));
    }
    for (const m of ['mb_policy', 'mb_ipcache', 'mb_ipcache_host', 'mb_ct_tables', 'mb_config', 'mb_ev_buckets', 'mb_events', 'mb_endpoints']) assert.ok(existsSync(`${pinRoot}/${m}`), m);
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
    // medium monitor aggregation: the new connection is traced once on the node, where it is
    // delivered (B), and no packet of it traced from-endpoint at A (Cilium sends none)
    assert.ok(!evs.some((e) => e.type === 4 && e.subType === 5 && e.srcIp === A.ip && e.dstIp === B.ip), 'no from-endpoint trace of A -> B');
    // nor as it leaves A at all (to-stack, to-overlay): a packet for a local endpoint is traced
    // where it is delivered (bpf/README.md "Monitor aggregation")
    assert.deepEqual(evs.filter((e) => e.type === 4 && e.endpointId === A.id && e.srcIp === A.ip && e.dstIp === B.ip).map((e) => e.subType), [], 'no trace of A -> B at A');
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
    // proxy routing as the agent sets it up (idempotent: twice gives one rule)
    await d.call('proxyRouting');
    await d.call('proxyRouting');
    const rules = sh('ip', ['-n', topo.nodeNs, 'rule', 'show']).split('\n').filter((l) => /fwmark 0x200\/0xf00 lookup 2004/.test(l));
    assert.equal(rules.length, 1, `one proxy rule: ${rules.join(' | ')}`);
    assert.match(sh('ip', ['-n', topo.nodeNs, 'route', 'show', 'table', '2004']), /local default dev lo/);
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

  it('ingress L7 from a local pod: decided at the source, steered to the ingress proxy; fails closed (178) without one', async () => {
    await reset();
    await d.call('proxyRouting');
    const http = { parser: 'http', perSelector: [] };
    await d.call('applyFull', B.id, [{ key: { direction: 'ingress', identity: idOf(A), proto: 6, port: 8080, portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2, l7: http } }, ingress(idOf(A), 6, 9090)], { ingress: true, egress: false });
    let r = JSON.parse(inNs(A.ns, ['read', B.ip, '8080', '800'])) as { ok: boolean; line?: string };
    assert.equal(r.ok, false, 'no ingress proxy listener: fail closed');
    let evs = await events();
    const dr = find(evs, (e) => e.type === 1 && e.subType === 178 && e.dstPort === 8080 && e.srcIp === A.ip, 'drop 178 (no ingress proxy listener)');
    assert.equal(dr.endpointId, B.id, 'the drop is reported at the destination endpoint');
    assert.equal(dr.direction, 'ingress');
    await d.call('proxyListen', 15011, 1); // ingress http slot (proxySlot('http', 'ingress') = 1)
    try {
      r = JSON.parse(inNs(A.ns, ['read', B.ip, '8080', '1500'])) as { ok: boolean; line?: string };
      assert.deepEqual(r, { ok: true, line: `proxied ${B.ip}:8080` }, 'the ingress proxy accepted and sees the original destination');
      assert.equal(tcpConnect(A.ns, B.ip, 9090), true, 'L4-only entry delivered to the pod');
      assert.equal(tcpConnect(C.ns, B.ip, 8080), false, 'other identities still default-denied');
      evs = await events();
      const v = find(evs, (e) => e.type === 5 && e.endpointId === B.id && e.dstPort === 8080 && e.srcIp === A.ip && e.verdict > 0, 'ingress redirect verdict');
      assert.equal(v.verdict, 15001);
      assert.equal(v.direction, 'ingress');
      assert.equal(v.srcIdentity, idOf(A));
      assert.equal(v.dstIdentity, idOf(B));
      assert.ok(!evs.some((e) => e.type === 4 && e.endpointId === B.id && e.dstPort === 8080 && e.srcIp === A.ip), 'redirected: never delivered to B');
      find(evs, (e) => e.type === 4 && e.subType === 0 && e.endpointId === B.id && e.dstPort === 9090 && e.ctReason === 1, 'to-endpoint NEW trace at B for the early-decided 9090');
      const ct = await d.call<{ endpointId: number; direction: string; dstPort: number; state: number }[]>('conntrack');
      assert.ok(ct.some((c) => c.endpointId === B.id && c.direction === 'ingress' && c.dstPort === 9090 && (c.state & 0x10) === 0), 'B ingress entry made at the source, flag cleared by to_container');
      find(evs, (e) => e.type === 1 && e.subType === 133 && e.srcIp === C.ip && e.endpointId === B.id && e.direction === 'ingress', 'C dropped 133 at B ingress');
      // the ingress proxy's own upstream connections (SO_MARK 0xa00) are not policed again at to_container
      const pingFromNode = (mark?: number) => / 0% packet loss/.test(sh('nsenter', [`--net=/run/netns/${topo.nodeNs}`, 'ping', '-c1', '-W1', ...(mark ? ['-m', String(mark)] : []), B.ip], { allowFail: true }));
      assert.equal(pingFromNode(), false, 'node -> B without the mark: default deny');
      assert.equal(pingFromNode(0xa00), true, 'node -> B with MARK_MAGIC_PROXY_INGRESS');
    } finally {
      await d.call('proxyClose', 1);
    }
  });

  it('from_network: world -> pod ingress policy and L7 redirect on the network device', async () => {
    await reset();
    await d.call('proxyRouting');
    const world = createWorld(topo, '10.250.9.2');
    const { ns: wns, ifname: wif, ip: WIP } = world;
    try {
      assert.equal(await d.call('attachNetworkDevice', wif), true);
      assert.equal(await d.call('attachNetworkDevice', wif), true, 'idempotent');
      assert.equal(await d.call('attachNetworkDevice', 'mdp-nope0'), false, 'absent device');
      const http = { parser: 'http', perSelector: [] };
      await d.call('applyFull', B.id, [{ key: { direction: 'ingress', identity: 2, proto: 6, port: 8080, portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2, l7: http } }], { ingress: true, egress: false });
      let r = JSON.parse(inNs(wns, ['read', B.ip, '8080', '800'])) as { ok: boolean };
      assert.equal(r.ok, false, 'no ingress proxy: fail closed');
      let evs = await events();
      const d178 = find(evs, (e) => e.type === 1 && e.subType === 178 && e.srcIp === WIP && e.dstPort === 8080, 'drop 178 world -> B');
      assert.equal(d178.endpointId, B.id);
      assert.equal(d178.srcIdentity, 2);
      await d.call('proxyListen', 15012, 1);
      try {
        r = JSON.parse(inNs(wns, ['read', B.ip, '8080', '1500'])) as { ok: boolean; line?: string };
        assert.deepEqual(r, { ok: true, line: `proxied ${B.ip}:8080` }, 'world -> pod redirected to the ingress proxy');
      } finally {
        await d.call('proxyClose', 1);
      }
      assert.equal(tcpConnect(wns, B.ip, 9090), false, 'world -> B:9090 default-denied');
      assert.equal(tcpConnect(wns, A.ip, 7070), true, 'world -> A (no policy) allowed, replies pass');
      evs = await events();
      const dd = find(evs, (e) => e.type === 1 && e.subType === 133 && e.srcIp === WIP && e.dstPort === 9090, 'drop 133 world -> B:9090');
      assert.equal(dd.endpointId, B.id);
      assert.equal(dd.direction, 'ingress');
      find(evs, (e) => e.type === 4 && e.subType === 0 && e.endpointId === A.id && e.srcIp === WIP && e.ctReason === 1, 'to-endpoint NEW trace at A');
      // replies to an L7 proxy's transparent upstream socket (bound to A's address, egress proxy
      // mark) are delivered to the socket, not policed as new connections to A (deny-all ingress)
      const sw = spawnInNs(wns, ['serve', '8081', '']);
      procs.push(sw);
      await waitLine(sw, /ready/);
      await d.call('applyFull', A.id, [], { ingress: true, egress: false });
      assert.equal(await d.call('upstreamEcho', A.ip, 0xb00, WIP, 8081), true, 'proxy upstream from A\'s address to the world gets its replies');
      assert.equal(tcpConnect(wns, A.ip, 7070), false, 'a real new connection world -> A is still denied');
      killProc(sw);
      const c = await d.call<Record<string, string>>('counters');
      assert.ok(BigInt(c.pktsFromNetwork!) > 0n);
    } finally {
      world.destroy();
    }
  });

  it('ClusterIP services: DNAT to a hashed backend, reverse NAT of replies, policy on the backend, 158 without backends', async () => {
    await reset();
    const VIP = '10.96.0.50';
    // pods' packets skip the frontend lookup only while the node has no service: the flag is
    // cleared before the first is written (else the connections below would not be translated)
    const noServices = () => {
      const m = BpfMap.fromPin(`${pinRoot}/mb_config`);
      try {
        return ((decodeDpConfig(m.lookup(encodeU32(0))!).flags ?? 0) & DP_F_NO_SERVICES) !== 0;
      } finally {
        m.close();
      }
    };
    assert.equal(noServices(), true, 'no service yet');
    // the frontend address filter (mb_lb_vips): a pod's packet to an address whose bit is clear
    // skips the frontend lookup; every frontend's bit is set while it has a frontend
    const vipBitSet = (ip: string) => {
      const m = BpfMap.fromPin(`${pinRoot}/mb_lb_vips`);
      try {
        const bit = lbVipBit(ip);
        return ((m.lookup(encodeU32(0))![bit >> 3]! >> (bit & 7)) & 1) === 1;
      } finally {
        m.close();
      }
    };
    const filterEmpty = () => {
      const m = BpfMap.fromPin(`${pinRoot}/mb_lb_vips`);
      try {
        return m.lookup(encodeU32(0))!.every((x) => x === 0);
      } finally {
        m.close();
      }
    };
    assert.equal(filterEmpty(), true, 'no frontend, no bit');
    await d.call('upsertService', { ip: VIP, port: 80, proto: 'TCP', backends: [{ ip: B.ip, port: 8080 }, { ip: A.ip, port: 7070 }] });
    await d.call('upsertService', { ip: VIP, port: 53, proto: 'UDP', backends: [{ ip: B.ip, port: 5353 }] });
    const dump = await d.call<{ ip: string; port: number; proto: string; backends: unknown[] }[]>('serviceDump');
    assert.equal(dump.length, 2);
    assert.equal(noServices(), false);
    let ok = 0;
    for (let i = 0; i < 16; i++) if (tcpConnect(C.ns, VIP, 80, 1500)) ok++;
    assert.equal(ok, 16, 'every connection to the VIP completes (replies come from the VIP)');
    let evs = await events();
    // each new connection traced where it is delivered (to-endpoint at the backend), after DNAT
    const hits = new Set(evs.filter((e) => e.type === 4 && e.subType === 0 && e.srcIp === C.ip && e.ctReason === 1 && e.proto === 6).map((e) => `${e.dstIp}:${e.dstPort}`));
    assert.deepEqual([...hits].sort(), [`${A.ip}:7070`, `${B.ip}:8080`].sort(), 'both backends used; traces show the backend');
    assert.ok(!evs.some((e) => e.type === 4 && e.endpointId === C.id && e.srcIp === A.ip && e.srcPort === 7070 && e.dstIp === C.ip && e.ctReason !== 3), 'replies traced as REPLY');
    const hold = spawnInNs(C.ns, ['hold', VIP, '80']);
    procs.push(hold);
    await waitLine(hold, /connected/);
    for (const m of ['a', 'b', 'c']) {
      hold.stdin!.write(`${m}\n`);
      assert.match(await waitLine(hold, /pong|fail/), /pong/, 'echo through the service, same backend for the connection');
    }
    hold.stdin!.end();
    killProc(hold);
    const u = JSON.parse(inNs(C.ns, ['udp', VIP, '53', '1500'])) as { ok: boolean };
    assert.equal(u.ok, true, 'UDP echo through the service (connected socket: reply source is the VIP)');
    // ICMP port unreachable from the backend is reverse-NATed too: the client's socket sees ECONNREFUSED
    await d.call('upsertService', { ip: VIP, port: 54, proto: 'UDP', backends: [{ ip: B.ip, port: 5454 }] });
    const refused = JSON.parse(inNs(C.ns, ['udp', VIP, '54', '1500'])) as { ok: boolean; err?: string };
    assert.equal(refused.err, 'ECONNREFUSED', `ICMP error through the service: ${JSON.stringify(refused)}`);
    await d.call('deleteService', { ip: VIP, port: 54, proto: 'UDP' });
    assert.equal(vipBitSet(VIP), true, "the VIP's bit in the frontend filter");
    // beside the filter, an attacker's view: the VIP on a port no frontend has is not translated.
    // The drains wait: the agent reads the ring in pauses, so events(0) can leave the UDP exchange's
    // traces to show up below
    await events();
    assert.equal(tcpConnect(C.ns, VIP, 81, 600), false, 'VIP:81 has no frontend');
    evs = await events();
    assert.ok(!evs.some((e) => e.srcIp === C.ip && (e.dstIp === A.ip || e.dstIp === B.ip)), 'VIP:81 not translated to any backend');
    // a pod's address that is also a frontend (B:9090 -> A:7070): the frontend's port is
    // translated, the pod's other ports are the pod's; once the frontend is gone, all of them
    assert.notEqual(lbVipBit(B.ip), lbVipBit(VIP), 'the test needs B its own bit');
    assert.equal(vipBitSet(B.ip), false);
    await d.call('upsertService', { ip: B.ip, port: 9090, proto: 'TCP', backends: [{ ip: A.ip, port: 7070 }] });
    assert.equal(vipBitSet(B.ip), true, "a frontend's bit set once it is written");
    const newConns = (list: DatapathEvent[]) => new Set(list.filter((e) => e.type === 4 && e.subType === 0 && e.srcIp === C.ip && e.ctReason === 1 && e.proto === 6).map((e) => `${e.dstIp}:${e.dstPort}`));
    await events();
    assert.equal(tcpConnect(C.ns, B.ip, 9090, 1500), true, 'B:9090 through the frontend to A:7070');
    assert.equal(tcpConnect(C.ns, B.ip, 8080, 1500), true, 'B:8080 is B');
    assert.deepEqual([...newConns(await events())].sort(), [`${A.ip}:7070`, `${B.ip}:8080`].sort(), 'B:9090 translated, B:8080 not');
    await d.call('deleteService', { ip: B.ip, port: 9090, proto: 'TCP' });
    assert.equal(vipBitSet(B.ip), false, "a frontend's bit cleared once the last frontend on the address is gone");
    assert.equal(vipBitSet(VIP), true, "the other frontends' bits stay");
    await events();
    assert.equal(tcpConnect(C.ns, B.ip, 9090, 1500), true, 'B:9090 is B again');
    assert.deepEqual([...newConns(await events())], [`${B.ip}:9090`], 'not translated once the frontend is gone');
    // policy sees the backend: C may only reach B:8080
    await d.call('applyFull', C.id, [egress(idOf(B), 6, 8080), egress(idOf(B), 17, 5353)], { ingress: false, egress: true });
    await events();
    const res: boolean[] = [];
    for (let i = 0; i < 12; i++) res.push(tcpConnect(C.ns, VIP, 80, 600));
    assert.ok(res.includes(true) && res.includes(false), `some land on B (allowed), some on A (denied): ${res}`);
    evs = await events();
    const dr = find(evs, (e) => e.type === 1 && e.subType === 133 && e.endpointId === C.id && e.dstIp === A.ip && e.dstPort === 7070, 'drop 133 for the backend A');
    assert.equal(dr.dstIdentity, idOf(A));
    assert.equal(dr.direction, 'egress');
    // no backends: 158
    await d.call('upsertService', { ip: VIP, port: 80, proto: 'TCP', backends: [] });
    assert.equal(tcpConnect(C.ns, VIP, 80, 600), false);
    evs = await events();
    find(evs, (e) => e.type === 1 && e.subType === 158 && e.endpointId === C.id && e.dstIp === VIP, 'drop 158 SERVICE_BACKEND_NOT_FOUND');
    await d.call('deleteService', { ip: VIP, port: 80, proto: 'TCP' });
    assert.equal(noServices(), false, 'one service left');
    await d.call('deleteService', { ip: VIP, port: 53, proto: 'UDP' });
    assert.equal((await d.call<unknown[]>('serviceDump')).length, 0);
    assert.equal(noServices(), true, 'the last one gone');
    assert.equal(filterEmpty(), true, 'the last frontend gone, no bit');
    assert.equal(JSON.parse(inNs(C.ns, ['udp', VIP, '53', '800'])).ok, false, 'a deleted frontend is not translated');
    const c = await d.call<Record<string, string>>('counters');
    assert.ok(BigInt(c.lbTranslations!) > 0n);
  });

  it('local delivery from the sender checks the destination veth\'s MTU: a frame bigger takes the stack\'s path (fragmentation needed), small and mid-sized ones are delivered', async () => {
    await reset();
    const delivered = async () => BigInt((await d.call<Record<string, string>>('counters')).localDelivered!);
    // C's own link takes 1500; B's host veth 1200: the frame C sends to B must fit the latter
    const pingOut = (size: number) => {
      const r = spawnSync('nsenter', [`--net=/run/netns/${C.ns}`, 'ping', '-c1', '-W1', '-M', 'do', '-s', String(size), B.ip], { encoding: 'utf8', timeout: 5000 });
      return `${r.stdout}${r.stderr}`;
    };
    sh('ip', ['-n', topo.nodeNs, 'link', 'set', B.hostIf, 'mtu', '1200']);
    try {
      pingOut(16); // the ARP/neighbour state and conntrack entry of the first echo out of the way
      for (const size of [16, 1000, 1172]) {
        const before = await delivered();
        assert.match(pingOut(size), / 0% packet loss/, `a ${size + 28}-byte echo fits 1200`);
        assert.ok((await delivered()) > before, `a ${size + 28}-byte echo delivered from the sender`);
      }
      const before = await delivered();
      const out = pingOut(1173);
      assert.match(out, /mtu = 1200|Frag needed|message too long/i, `a 1201-byte echo is answered by the stack: ${out}`);
      assert.equal(await delivered(), before, 'the too-big echo was not delivered from the sender');
    } finally {
      sh('ip', ['-n', topo.nodeNs, 'link', 'set', B.hostIf, 'mtu', '1500']);
    }
  });

  it('a direction without policy entries is decided without looking (EP_F_NO_POLICY_*); the first entry written into it is enforced, and so is its removal', async () => {
    await reset();
    const noPolicy = (id: number) => {
      const m = BpfMap.fromPin(`${pinRoot}/mb_ep_ids`);
      try {
        const f = decodeEpConfig(m.lookup(encodeU32(id))!).flags;
        return { ingress: (f & EP_F_NO_POLICY_INGRESS) !== 0, egress: (f & EP_F_NO_POLICY_EGRESS) !== 0 };
      } finally {
        m.close();
      }
    };
    assert.deepEqual(noPolicy(A.id), { ingress: true, egress: true }, 'no entry of A: both directions decided without looking');
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true);
    // the first egress entry of A, by delta: a deny, enforced from the next connection on
    const deny8080 = egress(idOf(B), 6, 8080, 16, 'deny');
    await d.call('applyDelta', A.id, [deny8080], []);
    assert.deepEqual(noPolicy(A.id), { ingress: true, egress: false });
    await events(0);
    assert.equal(tcpConnect(A.ns, B.ip, 8080), false, 'an egress deny written into an empty direction is enforced');
    assert.equal(tcpConnect(A.ns, B.ip, 9090), true, 'the rest of the direction still allowed (no default deny)');
    find(await events(), (e) => e.type === 1 && e.subType === 181 && e.endpointId === A.id && e.direction === 'egress' && e.dstPort === 8080, 'egress drop 181');
    // the same for B's ingress, by a full sync
    await d.call('applyFull', B.id, [ingress(idOf(A), 6, 9090, 16, 'deny')], { ingress: false, egress: false });
    assert.deepEqual(noPolicy(B.id), { ingress: false, egress: true });
    assert.equal(tcpConnect(A.ns, B.ip, 9090), false, 'an ingress deny written into an empty direction is enforced');
    // default deny with no entry: decided without looking, and denied
    await d.call('applyFull', C.id, [], { ingress: true, egress: false });
    assert.deepEqual(noPolicy(C.id), { ingress: true, egress: true });
    assert.equal(tcpConnect(A.ns, C.ip, 7070), false, 'default deny of a direction without entries');
    // the last entries gone: allowed again, the bits back
    await d.call('applyDelta', A.id, [], [deny8080.key]);
    await d.call('applyFull', B.id, [], { ingress: false, egress: false });
    assert.deepEqual(noPolicy(A.id), { ingress: true, egress: true });
    assert.deepEqual(noPolicy(B.id), { ingress: true, egress: true });
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true);
    assert.equal(tcpConnect(A.ns, B.ip, 9090), true);
  });

  it('an endpoint id whose veth another endpoint takes over delivers nothing: its by-id entry goes before the veth changes hands', async () => {
    await reset();
    const delivered = async () => BigInt((await d.call<Record<string, string>>('counters')).localDelivered!);
    const byId = (id: number) => {
      const m = BpfMap.fromPin(`${pinRoot}/mb_ep_ids`);
      try {
        return m.lookup(encodeU32(id));
      } finally {
        m.close();
      }
    };
    let before = await delivered();
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true);
    assert.ok((await delivered()) > before, 'A -> B delivered from the sender');
    // endpoint 99 (another address) on B's veth: the ipcache still names B's id for B's address
    const Z = { id: 99, identity: 1099, ipv4: '10.200.0.99', ifname: B.hostIf, ifindex: B.ifindex };
    try {
      await d.call('upsertEndpoint', Z);
      assert.equal(byId(B.id), null, "B's by-id entry is gone with its veth");
      before = await delivered();
      tcpConnect(A.ns, B.ip, 8080); // B's replies leave a veth whose config is Z's: refused (132)
      assert.equal(await delivered(), before, "nothing delivered from the sender by B's stale id");
    } finally {
      await d.call('upsertEndpoint', { id: B.id, identity: idOf(B), ipv4: B.ip, ifname: B.hostIf, ifindex: B.ifindex });
    }
    assert.equal(byId(Z.id), null, "Z's by-id entry is gone once B has its veth back");
    before = await delivered();
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true);
    assert.ok((await delivered()) > before, 'A -> B delivered from the sender again');
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

    const d2 = node.driver();
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
