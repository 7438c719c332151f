// The attacker's review of the datapath's shortcuts (issues 11/12): each one skips a check on the
// assumption that something else holds. Here a host outside the node sends any bytes through the
// node's network device, a pod (root in its namespace: raw frames) sends any bytes through its
// veth, and the agent restarts between its writes; each test says which shortcut it aims at.
// Raw frames from dist/rawpkt (AF_PACKET), captures at the destination, the programs' events.
// Needs root; everything made here (mdp-* namespaces, /sys/fs/bpf/mdp-* pins) goes in after().
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GW, ping, type Topo, type Pod, type World } from './support/topo.ts';
import type { Driver } from './support/rpc.ts';
import { DatapathNode } from './support/node.ts';
import type { DatapathEvent } from '../../../src/datapath/types.ts';
import type { MapStateKey } from '../../../src/policy/types.ts';
import { eth, ipv4, udp, sendFrames, capturedAt, ensureRawpkt, ETH_IP, UDP } from '../support/frames.ts';
import { skipUnless } from '../../support/requirements.ts';

const node = new DatapathNode({ prefix: 'k', pods: 3, subnet: 7, identityBase: 7000, worldIp: '10.250.9.2' });

type WireEntry = { key: MapStateKey; entry: { verdict: 'allow' | 'deny'; matchType?: number } };
const rule = (direction: 'ingress' | 'egress', identity: number, proto: number, port = 0, verdict: 'allow' | 'deny' = 'allow'): WireEntry =>
  ({ key: { direction, identity, proto, port, portPrefixLen: port ? 16 : 0 }, entry: { verdict, matchType: 2 } });
const HOST = 1;
const WORLD = 2;

describe('datapath attacker (root, namespaces, eBPF, raw frames)', { skip: skipUnless('root'), concurrency: false }, () => {
  let topo: Topo;
  let world: World;
  let d: Driver;
  let A: Pod, B: Pod;
  const idOf = (p: Pod) => node.idOf(p);
  const reset = () => node.reset();
  const events = (waitMs = 400): Promise<DatapathEvent[]> => node.events(waitMs);
  const find = (evs: DatapathEvent[], pred: (e: DatapathEvent) => boolean, what: string): DatapathEvent => node.find(evs, pred, what);
  const counter = async (name: string) => BigInt((await d.call<Record<string, string>>('counters'))[name]!);

  before(async () => {
    ensureRawpkt();
    await node.up();
    ({ topo, world, d } = node);
    [A, B] = topo.pods as [Pod, Pod, Pod];
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
});
