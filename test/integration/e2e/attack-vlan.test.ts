/**
 * Attack (issue 9, finding 1): frames the datapath does not parse used to pass. A pod with
 * CAP_NET_RAW sends IPv4 inside two stacked VLAN tags; the kernel takes one tag before tc, the
 * program saw 0x8100 and passed the frame, the kernel took the rest and routed the packet. A UDP
 * datagram to a forbidden host got its answer; re-sending the pod's own SYN that way opened TCP
 * connections to a forbidden host and to the node's metrics port. Now every such frame is dropped
 * at the pod's veth with UNSUPPORTED_L3_PROTOCOL (139) and a flow; nothing reaches the outside
 * (captured in the world namespace) and nothing answers.
 *
 * The lab is single stack (enable-ipv6 off, issue 14): IPv6 is no protocol the datapath enforces
 * there, so a pod's IPv6 frame to another pod (sent from a packet socket; the pod has no IPv6
 * address of its own) is dropped at the sender's veth with the same reason and a DROPPED flow, in
 * `membrane observe` and in the upstream hubble CLI, and never reaches the other pod (captured
 * there, beside an IPv4 frame the policy allows, which does).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { TestLab, type Flow } from '../support/lab.ts';
import { ETH_IP, TPID_8021AD, TPID_8021Q, UDP, TCP, SYN, eth, ipv4, tcp, udp, retag, startCapture, capturedAt, ensureRawpkt } from '../support/frames.ts';
import { ETH_IPV6, NH, icmp6, ipv6, tcp6 } from '../support/frames6.ts';
import { hubbleCli } from '../support/hubble-cli.ts';
import { podIp6 } from '../../../src/lab/names.ts';
import {
  API, FORBIDDEN, NODE_IP, WORLD_IFACE, cnp, egressTo, ns, pod, podNet, send, worldNetns, type PodNet,
} from '../support/attack.ts';

const lab = new TestLab(`avl${process.pid % 10000}`);
let atk: PodNet;
let peer: PodNet;
const STACKS = [
  [{ tpid: TPID_8021Q, vid: 0 }, { tpid: TPID_8021Q, vid: 0 }],
  [{ tpid: TPID_8021AD, vid: 0 }, { tpid: TPID_8021Q, vid: 0 }],
];

before(async () => {
  ensureRawpkt();
  await lab.up();
  await lab.apply([
    ns('avl'),
    pod('avl', 'attacker', { app: 'attacker' }),
    pod('avl', 'peer', { app: 'peer' }),
    cnp('avl', 'attacker-openai-only', {
      endpointSelector: { matchLabels: { app: 'attacker' } },
      egress: [egressTo(`${API}/32`, [80, 443], [7]), { toEndpoints: [{ matchLabels: { app: 'peer' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }],
    }),
  ]);
  const ips = await lab.podIPs();
  const ip = ips['avl/attacker'];
  assert.ok(ip && ips['avl/peer'], 'attacker and peer have IPs');
  atk = podNet(lab, 'avl', 'attacker', ip);
  peer = podNet(lab, 'avl', 'peer', ips['avl/peer']);
});
after(async () => { await lab.down(); });

async function dropsFrom(since: Date, pred: (f: Flow) => boolean): Promise<Flow[]> {
  let fs: Flow[] = [];
  for (let i = 0; i < 20; i++) {
    fs = await lab.flows(['--from-pod', 'avl/attacker', '--verdict', 'DROPPED', '--since', since.toISOString(), '--last', '2000']);
    if (fs.some(pred)) return fs;
    await new Promise((r) => setTimeout(r, 250));
  }
  return fs;
}

test('stacked VLAN tags: a UDP datagram to a forbidden host neither arrives nor is answered; dropped as UNSUPPORTED_L3_PROTOCOL', async () => {
  assert.deepEqual(await lab.probe('avl', 'attacker', [`${API}:80/tcp`, `${API}:7/udp`, `${FORBIDDEN}:7/udp`, `${FORBIDDEN}:80/tcp`]), {
    [`${API}:80/tcp`]: true, [`${API}:7/udp`]: true, [`${FORBIDDEN}:7/udp`]: false, [`${FORBIDDEN}:80/tcp`]: false,
  }, 'positive and negative controls: the policy allows api.openai.com only');
  const since = new Date();
  const frames = STACKS.map((tags, i) => eth({ dst: atk.gw, src: atk.mac, type: ETH_IP, tags },
    ipv4({ src: atk.ip, dst: FORBIDDEN, proto: UDP }, udp({ src: atk.ip, dst: FORBIDDEN, sport: 50001 + i, dport: 7 }, Buffer.from('smuggled past the policy')))));
  const replies = await startCapture(atk.netns, 'eth0', 60_000);
  const arrived = await capturedAt(worldNetns(lab), WORLD_IFACE, () => send(atk, frames), 1500);
  const back = await replies.stop();
  assert.deepEqual(arrived.filter((f) => f.ip?.src === atk.ip), [], 'nothing from the attacker reached the world');
  assert.deepEqual(back.filter((f) => f.dir === 'in' && f.ip?.src === FORBIDDEN), [], 'no answer came back');
  const fs = await dropsFrom(since, (f) => f.drop_reason_desc === 'UNSUPPORTED_L3_PROTOCOL' && f.l4?.UDP?.destination_port === 7);
  const d = fs.filter((f) => f.drop_reason_desc === 'UNSUPPORTED_L3_PROTOCOL' && f.IP?.destination === FORBIDDEN);
  assert.equal(d.length, STACKS.length, `one DROPPED flow per tagged frame: ${JSON.stringify(fs.slice(-5))}`);
  assert.equal(d[0]!.traffic_direction, 'EGRESS');
  assert.equal(d[0]!.source?.pod_name, 'attacker');
});

test('stacked VLAN tags: re-sending the pod\'s own SYN opens no TCP connection to a forbidden host or to the node\'s metrics port', async () => {
  for (const [ip, port] of [[FORBIDDEN, 80], [NODE_IP, 9965]] as const) {
    const since = new Date();
    const cap = await startCapture(atk.netns, 'eth0', 60_000);
    const world = await startCapture(worldNetns(lab), WORLD_IFACE, 60_000);
    try {
      // the pod's kernel connects; policy drops its SYNs; the attacker re-sends them tagged
      const probe = lab.probe('avl', 'attacker', [`${ip}:${port}/tcp`], 6000);
      const synPred = (f: { dir: string; ip?: { dst: string; proto: number }; dport?: number; tcpFlags?: number }) =>
        f.dir === 'out' && f.ip?.dst === ip && f.ip.proto === TCP && f.dport === port && f.tcpFlags === SYN;
      const syn = await cap.waitFor(synPred, 30_000); // the prober starts in the pod first: seconds on a loaded machine
      assert.ok(syn, `the pod's SYN to ${ip}:${port} was captured`);
      const deadline = Date.now() + 3000;
      while (Date.now() < deadline) {
        send(atk, STACKS.map((tags) => retag(syn.hex, tags)));
        await new Promise((r) => setTimeout(r, 500));
      }
      const r = await probe;
      assert.deepEqual(r, { [`${ip}:${port}/tcp`]: false }, `no connection to ${ip}:${port}`);
    } finally {
      const got = await world.stop();
      await cap.stop();
      if (ip === FORBIDDEN) assert.deepEqual(got.filter((f) => f.ip?.src === atk.ip), [], 'no SYN reached the forbidden host');
    }
    const fs = await dropsFrom(since, (f) => f.drop_reason_desc === 'UNSUPPORTED_L3_PROTOCOL' && f.IP?.destination === ip);
    assert.ok(fs.some((f) => f.drop_reason_desc === 'UNSUPPORTED_L3_PROTOCOL' && f.IP?.destination === ip && f.l4?.TCP?.destination_port === port),
      `the tagged SYNs are DROPPED flows: ${JSON.stringify(fs.slice(-3))}`);
  }
  assert.deepEqual(await lab.probe('avl', 'attacker', [`${API}:443/tcp`]), { [`${API}:443/tcp`]: true }, 'positive control: the allowed host still works');
});

test('IPv6 disabled (single stack): a pod\'s IPv6 frame to another pod never arrives; DROPPED as UNSUPPORTED_L3_PROTOCOL with a flow in observe and the hubble CLI', async () => {
  // the addresses the pods would have in dual stack (fd00:10:244:1::x): nothing in the lab knows them
  const [src6, dst6] = [podIp6(atk.ip), podIp6(peer.ip)];
  const mark = (s: string) => Buffer.from(`v6-off ${s} ${process.pid}`);
  const v4 = eth({ dst: atk.gw, src: atk.mac, type: ETH_IP }, ipv4({ src: atk.ip, dst: peer.ip, proto: TCP }, tcp({ src: atk.ip, dst: peer.ip, sport: 43101, dport: 8080, flags: SYN }, mark('v4'))));
  const syn6 = eth({ dst: atk.gw, src: atk.mac, type: ETH_IPV6 }, ipv6({ src: src6, dst: dst6, nh: NH.TCP }, tcp6({ src: src6, dst: dst6, sport: 43102, dport: 8080, flags: SYN }, mark('syn6'))));
  const ping6 = eth({ dst: atk.gw, src: atk.mac, type: ETH_IPV6 }, ipv6({ src: src6, dst: dst6, nh: NH.ICMPV6 }, icmp6({ src: src6, dst: dst6, type: 128, rest: Buffer.from([0, 7, 0, 1]) }, mark('ping6'))));
  const since = new Date();
  const seen = await capturedAt(peer.netns, 'eth0', () => send(atk, [v4, syn6, ping6]), 1500);
  const has = (s: string) => seen.some((f) => f.dir === 'in' && f.hex.includes(mark(s).toString('hex')));
  assert.equal(has('v4'), true, 'positive control: the attacker\'s raw IPv4 SYN to the peer (allowed) arrives');
  assert.deepEqual([has('syn6'), has('ping6'), seen.filter((f) => f.ethertype === ETH_IPV6 && f.dir === 'in').length], [false, false, 0], 'no IPv6 frame reached the peer');

  const endpoints = JSON.parse(await lab.ok(['get', 'endpoints', '-n', 'avl', '-o', 'json'])) as { items: { pod: string; identity: number }[] };
  const atkId = endpoints.items.find((e) => e.pod === 'attacker')!.identity;
  assert.ok(atkId >= 256, `the attacker's identity: ${JSON.stringify(endpoints.items)}`);
  const isDrop = (f: Flow, port?: number) => f.drop_reason_desc === 'UNSUPPORTED_L3_PROTOCOL' && f.IP?.ipVersion === 'IPv6' &&
    f.IP?.source === src6 && f.IP?.destination === dst6 && (port === undefined ? f.l4?.ICMPv6?.type === 128 : f.l4?.TCP?.destination_port === port);
  const args = ['--verdict', 'DROPPED', '--ip-version', 'v6', '--from-identity', String(atkId), '--since', since.toISOString(), '--last', '2000'];
  const fs = await lab.waitFlows(args, (xs) => xs.some((f) => isDrop(f, 8080)) && xs.some((f) => isDrop(f)));
  const syn = fs.find((f) => isDrop(f, 8080));
  assert.ok(syn && fs.some((f) => isDrop(f)), `a DROPPED flow for the IPv6 SYN and the ping: ${JSON.stringify(fs.slice(-4))}`);
  assert.equal(syn.verdict, 'DROPPED');
  assert.equal(syn.event_type?.type, 1);
  assert.equal(syn.event_type?.sub_type, 139);
  // Hubble names the ends by their IPs (threefour's ResolveEndpoint): the source address is no
  // endpoint's, so the source is the identity the datapath reported (the attacker's, with its
  // labels) and no pod; the destination is unknown (identity 0)
  assert.deepEqual([syn.source?.identity, syn.source?.pod_name ?? '', syn.destination?.identity ?? 0], [atkId, '', 0]);
  assert.ok(syn.source?.labels?.includes('k8s:app=attacker'), JSON.stringify(syn.source));

  const hubble = execFileSync(hubbleCli(), ['observe', '--server', `unix://${lab.paths.hubbleSocket('node1')}`, ...args, '-o', 'json'], { encoding: 'utf8', timeout: 30_000 });
  const hs = hubble.split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { flow?: Flow }).flow).filter((f): f is Flow => !!f);
  const h = hs.find((f) => isDrop(f, 8080));
  assert.ok(h, `the hubble CLI shows the drop: ${hubble.slice(-2000)}`);
  assert.deepEqual([h.source?.identity, h.drop_reason_desc, h.traffic_direction], [atkId, 'UNSUPPORTED_L3_PROTOCOL', syn.traffic_direction]);
  assert.equal(JSON.stringify(await lab.probe('avl', 'attacker', [`${peer.ip}:8080/tcp`])), JSON.stringify({ [`${peer.ip}:8080/tcp`]: true }), 'IPv4 to the peer still works');
});
