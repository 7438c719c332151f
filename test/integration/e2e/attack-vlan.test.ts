/**
 * Attack (issue 9, finding 1): frames the datapath does not parse used to pass. A pod with
 * CAP_NET_RAW sends IPv4 inside two stacked VLAN tags; the kernel takes one tag before tc, the
 * program saw 0x8100 and passed the frame, the kernel took the rest and routed the packet. A UDP
 * datagram to a forbidden host got its answer; re-sending the pod's own SYN that way opened TCP
 * connections to a forbidden host and to the node's metrics port. Now every such frame is dropped
 * at the pod's veth with UNSUPPORTED_L3_PROTOCOL (139) and a flow; nothing reaches the outside
 * (captured in the world namespace) and nothing answers.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestLab, type Flow } from '../support/lab.ts';
import { ETH_IP, TPID_8021AD, TPID_8021Q, UDP, TCP, SYN, eth, ipv4, udp, retag, startCapture, ensureRawpkt } from '../support/frames.ts';
import {
  API, FORBIDDEN, NODE_IP, WORLD_IFACE, capturedAt, cnp, egressTo, ns, pod, podNet, send, worldNetns, type PodNet,
} from '../support/attack.ts';

const lab = new TestLab(`avl${process.pid % 10000}`);
let atk: PodNet;
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
    cnp('avl', 'attacker-openai-only', { endpointSelector: { matchLabels: { app: 'attacker' } }, egress: [egressTo(`${API}/32`, [80, 443], [7])] }),
  ]);
  const ip = (await lab.podIPs())['avl/attacker'];
  assert.ok(ip, 'attacker has an IP');
  atk = podNet(lab, 'avl', 'attacker', ip);
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
      const syn = await cap.waitFor(synPred, 8000);
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
