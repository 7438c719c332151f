// The attacker's review of the datapath's shortcuts (issues 11/12): each one skips a check on the
// assumption that something else holds. Here a host outside the node sends any bytes through the
// node's network device, a pod (root in its namespace: raw frames) sends any bytes through its
// veth, and the agent restarts between its writes; each test says which shortcut it aims at.
// Raw frames from dist/rawpkt (AF_PACKET), captures at the destination, the programs' events.
// Needs root; everything made here (mdp-* namespaces, /sys/fs/bpf/mdp-* pins) goes in after().
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GW, killProc, ping, sh, type Topo, type Pod, type World } from './support/topo.ts';
import { spawn } from 'node:child_process';
import type { Driver } from './support/rpc.ts';
import { DatapathNode } from './support/node.ts';
import type { DatapathEvent } from '../../../src/datapath/types.ts';
import type { MapStateKey } from '../../../src/policy/types.ts';
import { eth, ipv4, udp, sendFrames, capturedAt, ensureRawpkt, ETH_IP, TCP, UDP } from '../support/frames.ts';
import { existsSync } from 'node:fs';
import { BpfMap, pinnedLinkInfo } from '../../../src/sys/bpf.ts';
import { ctExtIndex, decodeEpConfig, encodeEpConfig, encodeU32, type EpConfig } from '../../../src/datapath/linux/codec.ts';
import { gatewayMac } from './support/topo.ts';
import { skipUnless } from '../../support/requirements.ts';

const node = new DatapathNode({ prefix: 'k', pods: 3, subnet: 7, identityBase: 7000, worldIp: '10.250.9.2' });

type WireEntry = { key: MapStateKey; entry: { verdict: 'allow' | 'deny'; matchType?: number } };
const rule = (direction: 'ingress' | 'egress', identity: number, proto: number, port = 0, verdict: 'allow' | 'deny' = 'allow'): WireEntry =>
  ({ key: { direction, identity, proto, port, portPrefixLen: port ? 16 : 0 }, entry: { verdict, matchType: 2 } });
const HOST = 1;
const WORLD = 2;
const TUNNEL_PORT = 8472;
const REMOTE_NODE = 6;

/** VXLAN (RFC 7348) with `vni`, around an inner Ethernet frame. */
const vxlan = (vni: number, inner: Buffer): Buffer => {
  const h = Buffer.alloc(8);
  h[0] = 0x08;
  h.writeUIntBE(vni, 4, 3);
  return Buffer.concat([h, inner]);
};

describe('datapath attacker (root, namespaces, eBPF, raw frames)', { skip: skipUnless('root'), concurrency: false }, () => {
  let topo: Topo;
  let world: World;
  let d: Driver;
  let A: Pod, B: Pod, C: Pod;
  const idOf = (p: Pod) => node.idOf(p);
  const reset = () => node.reset();
  const events = (waitMs = 400): Promise<DatapathEvent[]> => node.events(waitMs);
  const find = (evs: DatapathEvent[], pred: (e: DatapathEvent) => boolean, what: string): DatapathEvent => node.find(evs, pred, what);
  const counter = async (name: string) => BigInt((await d.call<Record<string, string>>('counters'))[name]!);

  /** An endpoint config in a pinned map (mb_endpoints by veth ifindex, mb_ep_ids by id). */
  const lookup = (map: string, key: number): EpConfig | null => {
    const m = BpfMap.fromPin(`${node.pinRoot}/${map}`);
    try {
      const v = m.lookup(encodeU32(key));
      return v ? decodeEpConfig(v) : null;
    } finally {
      m.close();
    }
  };
  /**
   * Runs `fn` in routing mode tunnel with a real VXLAN device (external, UDP 8472) in the node
   * namespace, from_overlay on it, and the world's namespace as another node on the underlay (the
   * ipcache names its address a node naming itself; its device is the underlay); the agent
   * restarts into that mode first (`opts`: more of the driver's options). Everything it made goes
   * afterwards.
   */
  const withOverlay = async (fn: () => Promise<void>, opts: object = {}) => {
    const vx = `mdpvx${node.tag.slice(0, 6)}`;
    sh('ip', ['-n', topo.nodeNs, 'link', 'add', vx, 'type', 'vxlan', 'external', 'dstport', String(TUNNEL_PORT)]);
    try {
      sh('ip', ['-n', topo.nodeNs, 'link', 'set', vx, 'up']);
      await d.close();
      d = node.driver({ tunnel: true, ...opts });
      await d.call('start');
      for (const p of topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
      assert.equal(await d.call('attachNetworkDevice', world.ifname, { underlay: true }), true);
      assert.equal(await d.call('attachOverlayDevice', vx), true);
      await d.call('upsertIPCache', [{ prefix: `${world.ip}/32`, identity: REMOTE_NODE, endpointId: 0, tunnelEndpoint: world.ip }]);
      await reset();
      await fn();
    } finally {
      await d.call('deleteIPCache', [`${world.ip}/32`]).catch(() => {});
      sh('ip', ['-n', topo.nodeNs, 'link', 'del', vx], { allowFail: true });
    }
  };
  /** A VXLAN frame from the world's namespace (as the node it plays, or `outerSrc`) to the node, around an inner IPv4 packet. */
  const overVxlan = (vni: number, innerIp: Buffer, outerSrc = world.ip, srcMac = world.mac) => eth({ dst: world.nodeMac, src: srcMac, type: ETH_IP },
    ipv4({ src: outerSrc, dst: GW, proto: UDP }, udp({ src: outerSrc, dst: GW, sport: 40000, dport: TUNNEL_PORT },
      vxlan(vni, eth({ dst: '02:00:00:00:00:01', src: '02:00:00:00:00:02', type: ETH_IP }, innerIp)))));

  before(async () => {
    ensureRawpkt();
    await node.up();
    ({ topo, world, d } = node);
    [A, B, C] = topo.pods as [Pod, Pod, Pod];
    await node.serve([B.ns, '8080', '5353']);

  });

  after(() => node.down());

  // from_network delivers into the pod itself (bpf_redirect_peer), past the node's routing input,
  // which drops a packet whose source is one of the node's own addresses (a martian source). The
  // ipcache names those addresses host (1), which every endpoint's allow-localhost lets in: from a
  // network device that identity is a lie. Cilium's resolve_srcid_ipv4 ignores the ipcache's host
  // for a packet that did not come from the host: world.
  it('a frame from a network device claiming the node\'s own address is the world\'s, never the host\'s: allow-localhost opens nothing to it', async () => {
    await reset();
    // B: ingress default deny; the host allowed on everything (the agent's allow-localhost), A on 5353
    await d.call('applyFull', B.id, [rule('ingress', HOST, 0), rule('ingress', idOf(A), UDP, 5353)], { ingress: true, egress: false });
    const spoof = (sport: number) => eth({ dst: world.nodeMac, src: world.mac, type: ETH_IP },
      ipv4({ src: GW, dst: B.ip, proto: UDP }, udp({ src: GW, dst: B.ip, sport, dport: 5353 }, Buffer.from('as the node'))));
    const d0 = await counter('networkDelivered');
    // twice: the first frame is a new connection (decided by from_network), the second one of a
    // connection conntrack would know if the first had passed (delivered from the device)
    const atB = await capturedAt(B.ns, 'eth0', () => { sendFrames(world.ns, 'eth0', [spoof(47100), spoof(47100)]); });
    assert.deepEqual(atB.filter((f) => f.dir === 'in' && f.sport === 47100).map((f) => f.hex), [], 'nothing claiming the node\'s address reached B');
    assert.equal(await counter('networkDelivered'), d0, 'nothing delivered from the device');
    const evs = await events();
    const drop = find(evs, (e) => e.type === 1 && e.endpointId === B.id && e.srcIp === GW && e.srcPort === 47100, 'the spoofed datagram\'s drop at B\'s ingress');
    assert.deepEqual([drop.subType, drop.srcIdentity, drop.direction], [133, WORLD, 'ingress'], 'decided as the world, denied by default');
    // the node itself still reaches B as the host (its packets take the stack's way to to_container)
    assert.equal(ping(topo.nodeNs, B.ip), true, 'node -> B allowed as the host');
    find(await events(), (e) => e.type === 5 && e.endpointId === B.id && e.srcIp === GW && e.srcIdentity === HOST && e.verdict === 0, 'the node\'s ping decided as the host');
  });

  // A pod may not speak the tunnel protocol (DROP_ENCAP_PROHIBITED, Cilium's policy_can_egress):
  // the check read the destination port of unfragmented packets only, yet a first fragment
  // carries the UDP header and its datagram is reassembled whole at its destination, where the
  // VXLAN socket decapsulates it. Later fragments follow their first (175 without it).
  it('routing mode tunnel: a pod\'s datagram to the tunnel port is dropped (170) whole or in fragments; the agent restarted into it keeps every policy entry enforced before its first write', async () => {
    await reset();
    // B: a deny-only ingress (no default deny): the world's UDP 5353 denied, the rest allowed
    await d.call('applyFull', B.id, [rule('ingress', WORLD, UDP, 5353, 'deny')], { ingress: false, egress: false });
    // the agent restarts into routing mode tunnel; until it has written B's policy again (as its
    // restore does: ipcache, endpoint, then policy), what decides B is what the maps hold
    await d.close();
    d = node.driver({ tunnel: true });
    await d.call('start');
    for (const p of topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
    assert.equal(await d.call('attachNetworkDevice', world.ifname), true);
    const fromWorld = (sport: number) => eth({ dst: world.nodeMac, src: world.mac, type: ETH_IP },
      ipv4({ src: world.ip, dst: B.ip, proto: UDP }, udp({ src: world.ip, dst: B.ip, sport, dport: 5353 }, Buffer.from('world'))));
    let atB = await capturedAt(B.ns, 'eth0', () => { sendFrames(world.ns, 'eth0', [fromWorld(47200)]); });
    assert.deepEqual(atB.filter((f) => f.dir === 'in' && f.sport === 47200).map((f) => f.hex), [], 'the deny survived the restart and the endpoint\'s rewrite');
    find(await events(), (e) => e.type === 1 && e.endpointId === B.id && e.srcIp === world.ip && e.subType === 181, 'the world\'s datagram denied (181) by the pinned entry');

    // A's datagrams to the tunnel port of an address outside the node (the world's): whole, a
    // first fragment, its later fragment; and a datagram to another port, fragmented, passes
    const gwA = gatewayMac(topo, A);
    const body = Buffer.alloc(1480 + 64, 0x42);
    const dgram = (dport: number) => udp({ src: A.ip, dst: world.ip, sport: 46100, dport }, body);
    const whole = eth({ dst: gwA, src: A.mac, type: ETH_IP }, ipv4({ src: A.ip, dst: world.ip, proto: UDP, id: 0x6001 }, udp({ src: A.ip, dst: world.ip, sport: 46100, dport: TUNNEL_PORT }, Buffer.from('vxlan'))));
    const first = (id: number, dport: number) => eth({ dst: gwA, src: A.mac, type: ETH_IP }, ipv4({ src: A.ip, dst: world.ip, proto: UDP, id, mf: true }, dgram(dport).subarray(0, 1480)));
    const later = (id: number, dport: number) => eth({ dst: gwA, src: A.mac, type: ETH_IP }, ipv4({ src: A.ip, dst: world.ip, proto: UDP, id, fragOffset: 1480 }, dgram(dport).subarray(1480)));
    await events(0);
    const seen = await capturedAt(world.ns, 'eth0', () => {
      sendFrames(A.ns, 'eth0', [whole, first(0x6002, TUNNEL_PORT), later(0x6002, TUNNEL_PORT), first(0x6003, 7777), later(0x6003, 7777)]);
    });
    const got = seen.filter((f) => f.dir === 'in' && f.ip?.src === A.ip && f.ip.proto === UDP).map((f) => `${f.ip!.id.toString(16)}@${f.ip!.fragOffset}`);
    assert.deepEqual(got.sort(), ['6003@0', '6003@1480'], `only the datagram to another port left the node: ${got}`);
    const evs = await events();
    const encap = evs.filter((e) => e.type === 1 && e.endpointId === A.id && e.subType === 170);
    assert.equal(encap.length, 2, `the whole datagram and the first fragment dropped as encapsulation (170): ${JSON.stringify(evs.filter((e) => e.type === 1).map((e) => [e.subType, e.dstPort]))}`);
    assert.ok(encap.every((e) => e.dstPort === TUNNEL_PORT && e.dstIp === world.ip));
    find(evs, (e) => e.type === 1 && e.endpointId === A.id && e.subType === 175 && e.dstIp === world.ip, 'its later fragment has no first fragment (175)');
  });

  // from_overlay delivers a connection conntrack knows into the pod itself, and decides a policy
  // change for it there (ct_recheck) with the inner source's identity as the pod's to_container
  // would resolve it: the ipcache's. For the node's own address as inner source that is the host,
  // which allow-localhost lets in: a connection the VNI's identity opened would outlive a policy
  // that no longer allows it. The stack would never deliver such a packet (a martian source on
  // cilium_vxlan); from here it is the world's, as from a network device. The world's namespace
  // plays the other node on the underlay (the ipcache names its address a node naming itself).
  it('routing mode tunnel: a connection delivered from the overlay with the node\'s own address as inner source is cut by the next policy change (never decided again as the host)', async () => {
    const VNI = 7777;
    await withOverlay(async () => {
      // B: ingress default deny; the VNI's identity on UDP 5353, the host on everything
      await d.call('applyFull', B.id, [rule('ingress', HOST, 0), rule('ingress', VNI, UDP, 5353)], { ingress: true, egress: false });
      const frame = (vni: number) => overVxlan(vni, ipv4({ src: GW, dst: B.ip, proto: UDP }, udp({ src: GW, dst: B.ip, sport: 47300, dport: 5353 }, Buffer.from('inner'))));
      const atB = (vni: number) => capturedAt(B.ns, 'eth0', () => { sendFrames(world.ns, 'eth0', [frame(vni)]); })
        .then((fs) => fs.filter((f) => f.dir === 'in' && f.sport === 47300 && f.ip?.src === GW));
      const d0 = await counter('overlayDelivered');
      assert.equal((await atB(VNI)).length, 1, 'the VNI\'s identity opens the connection (positive control)');
      assert.ok(await counter('overlayDelivered') > d0, 'delivered from from_overlay');
      assert.equal((await atB(VNI)).length, 1, 'the known connection\'s next datagram is delivered');
      // B's policy no longer allows the VNI's identity: the connection's next datagram is cut
      await d.call('applyFull', B.id, [rule('ingress', HOST, 0)], { ingress: true, egress: false });
      await events(0);
      assert.deepEqual(await atB(VNI), [], 'cut by the policy change');
      const drop = find(await events(), (e) => e.type === 1 && e.endpointId === B.id && e.srcIp === GW && e.srcPort === 47300, 'the drop at B\'s ingress');
      assert.deepEqual([drop.subType, drop.srcIdentity], [133, WORLD], 'decided again as the world, not as the host');
    });
  });

  // What from_overlay takes itself and what it leaves to the endpoint's to_container: its checks
  // come before any delivery (a VNI no node sends, an outer source that is not a node, an inner
  // source claiming a local endpoint), and a fragment is never delivered from there: an allowed
  // datagram's fragments reach the pod through the veth (the overlay's hint), an orphan later
  // fragment is dropped where the pod's state is (175).
  it('routing mode tunnel: from_overlay drops what no node sends before delivering anything; fragments go through the endpoint\'s to_container, orphans dropped there (175)', async () => {
    const VNI = 7778;
    const R = '10.250.8.5'; // a pod on the node the world plays, with the VNI's identity
    await withOverlay(async () => {
      await d.call('upsertIPCache', [{ prefix: `${R}/32`, identity: VNI, endpointId: 0, tunnelEndpoint: world.ip }]);
      await d.call('applyFull', B.id, [rule('ingress', VNI, UDP, 5353)], { ingress: true, egress: false });
      const dgram = (src: string, sport: number, n = 0) => udp({ src, dst: B.ip, sport, dport: 5353 }, Buffer.alloc(n || 5, 0x43));
      const whole = (src: string, sport: number, vni = VNI, outer = world.ip) => overVxlan(vni, ipv4({ src, dst: B.ip, proto: UDP, id: 0x7000 + sport % 256 }, dgram(src, sport)), outer);
      const body = dgram(R, 47401, 1200);
      const first = (id: number) => overVxlan(VNI, ipv4({ src: R, dst: B.ip, proto: UDP, id, mf: true }, body.subarray(0, 1000)));
      const later = (id: number) => overVxlan(VNI, ipv4({ src: R, dst: B.ip, proto: UDP, id, fragOffset: 1000 }, body.subarray(1000)));
      const d0 = await counter('overlayDelivered');
      const seen = await capturedAt(B.ns, 'eth0', () => {
        sendFrames(world.ns, 'eth0', [whole(R, 47400), whole(R, 47402, 5), whole(R, 47403, VNI, '10.250.9.99'), whole(A.ip, 47404), first(0x7101), later(0x7101), later(0x7102)]);
      });
      const got = seen.filter((f) => f.dir === 'in' && f.ip?.dst === B.ip && f.ip.proto === UDP).map((f) => f.sport !== undefined ? `${f.ip!.src}:${f.sport}` : `${f.ip!.id.toString(16)}@${f.ip!.fragOffset}`);
      assert.deepEqual(got.sort(), [`${R}:47400`, `${R}:47401`, '7101@1000'].sort(), `only the allowed datagram and fragments of the allowed one reached B: ${got}`);
      assert.equal(await counter('overlayDelivered') - d0, 1n, 'only the whole allowed datagram was delivered from from_overlay');
      const evs = await events();
      const drop = (reason: number, what: string) => find(evs, (e) => e.type === 1 && e.subType === reason, what);
      assert.equal(drop(171, 'a VNI no node sends (reserved 5)').srcIdentity, 5);
      assert.equal(drop(172, 'VXLAN from an address that is not a node').srcPort, 47403);
      assert.equal(drop(132, 'an inner source claiming local endpoint A').srcIp, A.ip);
      const orphan = drop(175, 'the orphan later fragment, at B');
      assert.deepEqual([orphan.endpointId, orphan.srcIp], [B.id, R]);
    });
  });

  // A host on the underlay that puts frames there with a node's address as source (with its own
  // MAC: a node's own address is taken from any link source on the underlay, as VXLAN crosses
  // routers) speaks VXLAN as that node: its VNI names any identity a node may send, and the pods'
  // policy decides by it. Nothing in plain VXLAN tells the node from the impostor; Cilium's
  // answer is encryption, and so is membrane's: with strict ingress (--encryption-strict-ingress)
  // VXLAN that did not come out of cilium_wg0 is dropped (195) before any delivery. This pins
  // both: the exposure without it (bpf/README.md "The underlay"), the drop with it.
  it('routing mode tunnel: VXLAN forged with a node\'s address (any MAC) carries the identity it names into a pod; with strict ingress it is dropped (195) before any delivery', async () => {
    const FORGED = 7779; // an identity B's policy lets in, named by the impostor's VNI
    const R = '10.250.8.6'; // a pod address on the node the world plays
    const IMPOSTOR = '02:00:00:0a:66:01';
    const forged = (sport: number) => overVxlan(FORGED, ipv4({ src: R, dst: B.ip, proto: UDP }, udp({ src: R, dst: B.ip, sport, dport: 5353 }, Buffer.from('forged'))), world.ip, IMPOSTOR);
    const atB = (sport: number) => capturedAt(B.ns, 'eth0', () => { sendFrames(world.ns, 'eth0', [forged(sport)]); })
      .then((fs) => fs.filter((f) => f.dir === 'in' && f.sport === sport && f.ip?.src === R).length);
    const policy = () => d.call('applyFull', B.id, [rule('ingress', FORGED, UDP, 5353)], { ingress: true, egress: false });
    await withOverlay(async () => {
      await policy();
      assert.equal(await atB(47600), 1, 'without strict ingress the impostor\'s VXLAN is the node\'s: delivered as the identity it names');
    });
    await withOverlay(async () => {
      await policy();
      assert.equal(await atB(47601), 0, 'strict ingress: plain VXLAN reaches no pod');
      const drop = find(await events(), (e) => e.type === 1 && e.subType === 195 && e.srcIp === R && e.dstIp === B.ip, 'the forged VXLAN dropped as unencrypted (195)');
      assert.equal(drop.srcIdentity, FORGED, 'the drop names the identity the VNI claimed');
    }, { strictIngress: true });
    // the agent as the other tests expect it: routing mode native, no strict ingress
    await d.close();
    d = node.driver();
    await d.call('start');
    for (const p of topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
    assert.equal(await d.call('attachNetworkDevice', world.ifname), true);
    await reset();
  });

  // The endpoint writer keeps a veth's config the endpoint's that holds it now: a veth whose
  // ifindex another endpoint took over (its old endpoint's veth gone, the index reused, while the
  // agent still knows the old endpoint) is that endpoint's. A policy change of the old endpoint
  // (its default-deny and no-policy bits) must not be written through that veth: it would give the
  // new endpoint the old one's bits (its default deny gone, its entries skipped) and the old id's
  // by-id entry the new one's config, by which the source decides the old address's ingress. Nor
  // may the old endpoint's removal take the veth's programs (pinned by the veth's name) with it.
  it('an endpoint whose veth another endpoint took over leaves the new one alone: its policy change (no bits, no by-id entry of the old id), its removal (the veth stays enforced)', async () => {
    await reset();
    // Z on B's veth while B is still known: Z's ingress default deny, A on TCP 8080 only
    const Z = { id: 99, identity: 7099, ipv4: '10.250.7.99', ifname: B.hostIf, ifindex: B.ifindex, mac: B.mac };
    const gwC = gatewayMac(topo, C);
    let sport = 47500;
    /** a datagram from C to B's address (routed to the veth): does it reach the namespace behind it? */
    const reachesVeth = async () => {
      const p = sport++;
      const f = eth({ dst: gwC, src: C.mac, type: ETH_IP }, ipv4({ src: C.ip, dst: B.ip, proto: UDP }, udp({ src: C.ip, dst: B.ip, sport: p, dport: 5353 }, Buffer.from('C'))));
      const seen = await capturedAt(B.ns, 'eth0', () => { sendFrames(C.ns, 'eth0', [f]); });
      return seen.some((x) => x.dir === 'in' && x.sport === p);
    };
    try {
      await d.call('upsertEndpoint', Z);
      await d.call('applyFull', Z.id, [rule('ingress', idOf(A), TCP, 8080)], { ingress: true, egress: false });
      const z = lookup('mb_endpoints', B.ifindex);
      assert.equal(z?.epId, Z.id, 'B\'s veth is Z\'s');
      assert.equal(lookup('mb_ep_ids', B.id), null, 'B\'s by-id entry went with its veth');
      assert.equal(await reachesVeth(), false, 'C -> the veth: Z\'s default deny');
      // B's policy changes: nothing of it may reach Z's veth
      await d.call('applyFull', B.id, [], { ingress: false, egress: false });
      assert.equal(await reachesVeth(), false, 'C -> the veth: still Z\'s default deny');
      assert.deepEqual(lookup('mb_endpoints', B.ifindex), z, 'Z\'s config unchanged, its flags included');
      assert.equal(lookup('mb_ep_ids', B.id), null, 'no by-id entry of B written');
      // B goes: the veth's programs (pinned by its name, which Z's are too) stay Z's
      await d.call('removeEndpoint', B.id);
      assert.equal(existsSync(`${node.pinRoot}/links/${B.hostIf}-egress`), true, 'the veth\'s to_container link is still pinned');
      assert.equal(await reachesVeth(), false, 'C -> the veth: still Z\'s default deny once B is gone');
      assert.deepEqual(lookup('mb_endpoints', B.ifindex), z, 'Z\'s config still there');
    } finally {
      await d.call('removeEndpoint', Z.id);
      await d.call('upsertEndpoint', { id: B.id, identity: idOf(B), ipv4: B.ip, ifname: B.hostIf, ifindex: B.ifindex, mac: B.mac });
    }
    assert.equal(lookup('mb_endpoints', B.ifindex)?.epId, B.id, 'B has its veth back');
    assert.equal(lookup('mb_ep_ids', B.id)?.ifindex, B.ifindex);
  });

  // Every policy change ends with a revision bump, and a connection's entry caches the revision
  // its verdict was made at. A hook that read an endpoint's config (or the source's identity)
  // before the revision could judge a packet by the config before a change and cache the change's
  // own revision: the connection then passes under the new policy, never decided again until the
  // next change. Here B's ingress flips between allow (no policy) and default deny, a config-only
  // change (the flags of B's config, then the bump), while the world floods one UDP flow at B from
  // the network device; after every flip to deny no entry of the flow may hold the current
  // revision (only an allow writes one), and once the flood ends under deny nothing reaches B.
  it('a flow retried while B\'s policy flips between allow and deny is never cached as allowed at a denying revision', async () => {
    await reset();
    const SPORT = 1024; // rawpkt flood's first source port: the flow is one connection
    const frame = eth({ dst: world.nodeMac, src: world.mac, type: ETH_IP },
      ipv4({ src: world.ip, dst: B.ip, proto: UDP }, udp({ src: world.ip, dst: B.ip, sport: SPORT, dport: 5353 }, Buffer.from('flip'))));
    const allow = () => d.call('applyFull', B.id, [], { ingress: false, egress: false });
    const deny = () => d.call('applyFull', B.id, [], { ingress: true, egress: false });
    const flood = spawn('ip', ['netns', 'exec', world.ns, ensureRawpkt(), 'flood', 'eth0', frame.toString('hex'), '1', '34', '2000000'], { stdio: 'ignore' });
    const stale: string[] = [];
    let rounds = 0;
    try {
      await d.call('mute');
      const until = Date.now() + 4000;
      while (Date.now() < until && flood.exitCode === null) {
        await allow();
        await new Promise((r) => setTimeout(r, 2));
        await deny();
        await new Promise((r) => setTimeout(r, 3));
        const rev = await d.call<number>('policyRevision');
        const es = (await d.call<{ srcPort: number; dstPort: number; policyRevision: number }[]>('ctTable', ctExtIndex(B.id)))
          .filter((e) => e.srcPort === SPORT && e.dstPort === 5353);
        // a later flip may already have moved the revision on: only the current one counts
        if (es.some((e) => e.policyRevision === rev) && rev === await d.call<number>('policyRevision')) stale.push(`round ${rounds} rev ${rev}`);
        rounds++;
      }
    } finally {
      killProc(flood);
      await d.call('start').catch(() => {}); // (started: subscribes again)
    }
    assert.ok(rounds >= 50, `enough flips (${rounds})`);
    assert.deepEqual(stale, [], `an allow cached at a denying revision after ${rounds} flips`);
    const atB = await capturedAt(B.ns, 'eth0', () => { sendFrames(world.ns, 'eth0', [frame, frame, frame]); });
    assert.deepEqual(atB.filter((f) => f.dir === 'in' && f.sport === SPORT).map((f) => f.hex), [], 'under deny nothing of the flow reaches B');
    await reset();
  });

  // The veth's programs hang on tcx links pinned by the veth's name (they outlive the agent); the
  // maps name the veth by ifindex only. An agent that restarts knows an endpoint it has not
  // upserted again only from the maps: removing it (its pod went while the agent was down, as the
  // agent's first reconcile does) must still detach its veth's programs and unpin their links, or
  // they stay attached to the veth (dropping everything as EP_NOT_READY while it lives) and pinned
  // after it is gone, for as long as the node runs.
  it('an endpoint removed after an agent restart, before any upsert of it, takes its veth\'s tcx links and their pins with it', async () => {
    await reset();
    const pins = () => ['ingress', 'egress'].filter((dir) => existsSync(`${node.pinRoot}/links/${C.hostIf}-${dir}`));
    // the links by id: a link exists while its pin (or an fd) holds it, and detaches when it goes
    const linkIds = ['ingress', 'egress'].map((dir) => pinnedLinkInfo(`${node.pinRoot}/links/${C.hostIf}-${dir}`));
    assert.ok(linkIds.every((li) => li && li.ifindex === C.ifindex), 'C\'s links pinned on its veth (positive control)');
    const live = () => linkIds.filter((li) => sh('bpftool', ['link', 'show', 'id', String(li!.id)], { allowFail: true }).startsWith(`${li!.id}:`));
    assert.equal(live().length, 2, 'C\'s tcx links exist (positive control)');
    await d.close();
    d = node.driver();
    await d.call('start');
    // the restarted agent upserts A and B again; C's pod went while it was down
    for (const p of [A, B]) await d.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
    try {
      await d.call('removeEndpoint', C.id);
      assert.equal(lookup('mb_endpoints', C.ifindex), null, 'C\'s veth entry gone');
      assert.equal(lookup('mb_ep_ids', C.id), null, 'C\'s by-id entry gone');
      assert.deepEqual(pins(), [], 'no link of C\'s veth left pinned');
      assert.deepEqual(live(), [], 'no tcx link (program) left on C\'s veth');
      assert.deepEqual(['ingress', 'egress'].filter((dir) => existsSync(`${node.pinRoot}/links/${B.hostIf}-${dir}`)), ['ingress', 'egress'], 'B\'s links untouched');
    } finally {
      await d.call('upsertEndpoint', { id: C.id, identity: idOf(C), ipv4: C.ip, ifname: C.hostIf, ifindex: C.ifindex, mac: C.mac });
    }
    assert.deepEqual(pins(), ['ingress', 'egress'], 'C attached again');
    assert.equal(ping(C.ns, A.ip), true, 'C -> A once C is back');

    // the pod went with its veth while the agent was down (its namespace deleted): the links are
    // defunct (on ifindex 0) and named by a veth nobody knows; removing the endpoint unpins them
    const vg = `mdpg${node.tag}`;
    sh('ip', ['-n', topo.nodeNs, 'link', 'add', vg, 'type', 'veth', 'peer', 'name', `mdph${node.tag}`]);
    try {
      const ifindex = (JSON.parse(sh('ip', ['-n', topo.nodeNs, '-j', 'link', 'show', 'dev', vg])) as { ifindex: number }[])[0]!.ifindex;
      await d.call('upsertEndpoint', { id: 98, identity: 7098, ipv4: '10.250.7.98', ifname: vg, ifindex, mac: '02:00:00:00:07:98' });
      const gone = () => ['ingress', 'egress'].filter((dir) => existsSync(`${node.pinRoot}/links/${vg}-${dir}`));
      assert.deepEqual(gone(), ['ingress', 'egress'], 'its links pinned (positive control)');
      await d.close();
      d = node.driver();
      await d.call('start');
      for (const p of topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
      sh('ip', ['-n', topo.nodeNs, 'link', 'del', vg]);
      await d.call('removeEndpoint', 98);
      assert.equal(lookup('mb_ep_ids', 98), null, 'its by-id entry gone');
      assert.deepEqual(gone(), [], 'its defunct links unpinned');
      assert.deepEqual(pins(), ['ingress', 'egress'], 'C\'s links untouched');
    } finally {
      sh('ip', ['-n', topo.nodeNs, 'link', 'del', vg], { allowFail: true });
      await d.call('removeEndpoint', 98).catch(() => {});
    }
  });

  // The maps name a removed endpoint's veth by ifindex alone. Its veth went while no agent ran and
  // the index was given to another device since, which the agent attached from_network to: the
  // endpoint's removal takes its own (defunct) links, never the device's.
  it('an endpoint removed after a restart whose veth\'s ifindex another device took meanwhile leaves that device\'s link', async () => {
    await reset();
    const vg = `mdpi${node.tag}`, dev = `mdpj${node.tag}`;
    const pinned = (name: string) => ['ingress', 'egress'].filter((dir) => existsSync(`${node.pinRoot}/links/${name}-${dir}`));
    sh('ip', ['-n', topo.nodeNs, 'link', 'add', vg, 'type', 'veth', 'peer', 'name', `mdpk${node.tag}`]);
    try {
      const ifindex = (JSON.parse(sh('ip', ['-n', topo.nodeNs, '-j', 'link', 'show', 'dev', vg])) as { ifindex: number }[])[0]!.ifindex;
      await d.call('upsertEndpoint', { id: 97, identity: 7097, ipv4: '10.250.7.97', ifname: vg, ifindex, mac: '02:00:00:00:07:97' });
      assert.deepEqual(pinned(vg), ['ingress', 'egress'], 'its links pinned (positive control)');
      await d.close();
      d = node.driver();
      await d.call('start');
      for (const p of topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
      sh('ip', ['-n', topo.nodeNs, 'link', 'del', vg]);
      sh('ip', ['-n', topo.nodeNs, 'link', 'add', dev, 'index', String(ifindex), 'type', 'veth', 'peer', 'name', `mdpl${node.tag}`]);
      assert.equal(await d.call('attachNetworkDevice', dev), true);
      const devLink = pinnedLinkInfo(`${node.pinRoot}/links/${dev}-ingress`);
      assert.equal(devLink?.ifindex, ifindex, 'the device on the reused index has its from_network link (positive control)');
      await d.call('removeEndpoint', 97);
      assert.deepEqual(pinned(vg), [], 'the endpoint\'s defunct links unpinned');
      assert.equal(lookup('mb_endpoints', ifindex), null, 'the endpoint\'s entry gone');
      assert.deepEqual(pinned(dev), ['ingress'], 'the device\'s link stays pinned');
      assert.equal(pinnedLinkInfo(`${node.pinRoot}/links/${dev}-ingress`)?.ifindex, ifindex, 'and attached to the device');
      assert.deepEqual(pinned(C.hostIf), ['ingress', 'egress'], 'the pods\' links untouched');
    } finally {
      sh('ip', ['-n', topo.nodeNs, 'link', 'del', vg], { allowFail: true });
      sh('ip', ['-n', topo.nodeNs, 'link', 'del', dev], { allowFail: true });
      await d.call('removeEndpoint', 97).catch(() => {});
    }
  });

  // peer_dest delivers by the mb_ep_ids entry alone, trusting that every id entry names a veth
  // whose entry is the same endpoint's. A pinned state that breaks it (an older agent's, or a
  // crash's) is repaired when an agent starts, before it writes anything else.
  it('an agent that starts removes every by-id entry naming a veth that is not its endpoint\'s (peer_dest\'s one lookup relies on it)', async () => {
    await reset();
    // endpoint 77 claims B's veth in mb_ep_ids only, as the agent never writes it
    const m = BpfMap.fromPin(`${node.pinRoot}/mb_ep_ids`);
    try {
      m.update(encodeU32(77), encodeEpConfig({ ifindex: B.ifindex, epId: 77, flags: 0, identity: 7077, ipv4: '10.250.7.77', mac: B.mac }));
    } finally {
      m.close();
    }
    assert.equal(lookup('mb_ep_ids', 77)?.ifindex, B.ifindex);
    await d.close();
    d = node.driver();
    await d.call('start');
    assert.equal(lookup('mb_ep_ids', 77), null, 'the stray by-id entry is gone at start');
    assert.equal(lookup('mb_ep_ids', B.id)?.ifindex, B.ifindex, 'B\'s own by-id entry is there');
    for (const p of topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
    assert.equal(ping(A.ns, B.ip), true, 'A -> B after the restart');
  });
});
