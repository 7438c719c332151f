/**
 * Attack (issue 9, "also found"): one 131,072-entry conntrack LRU shared by every endpoint was
 * flushed by one pod in ~1.6 s of SYNs, after which other pods' connections stalled (server
 * pushes dropped as POLICY_DENIED, ClusterIP replies without their reverse NAT); and a flood of
 * denied SYNs lost events and overwrote the Hubble ring, hiding other pods' flows. Now every
 * endpoint has its own conntrack tables (its flood evicts only its own entries) and its own
 * event budget (its flood cannot crowd out others' events); its losses are reported as lost
 * events.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { TestLab, REPO, type Flow } from '../support/lab.ts';
import { ETH_IP, TCP, SYN, eth, ipv4, tcp, floodFrames, ensureRawpkt } from '../support/frames.ts';
import { FORBIDDEN as WORLD_HOST, cnp, ns, pod, podNet, type PodNet } from '../support/attack.ts';

const lab = new TestLab(`acf${process.pid % 10000}`);
const NET_TOOL = join(REPO, 'test/integration/datapath/support/net-tool.ts');
const NODE = join(REPO, 'bin/node');
const DENIED = '203.0.113.10';
let atk: PodNet;
let ips: Record<string, string> = {};
let vip = '';
const procs: ChildProcess[] = [];

before(async () => {
  ensureRawpkt();
  await lab.up();
  await lab.apply([
    ns('acf'),
    pod('acf', 'pusher', { app: 'pusher' }, { command: [NODE, NET_TOOL, 'pushserve', '8091', '8092'] }),
    pod('acf', 'victim', { app: 'victim' }),
    pod('acf', 'attacker', { app: 'attacker' }),
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'pusher', namespace: 'acf' }, spec: { selector: { app: 'pusher' }, ports: [{ port: 91, targetPort: 8091, protocol: 'TCP' }] } },
    // the victim takes no connections: a server push reaches it only through its conntrack entry
    cnp('acf', 'victim-replies-only', { endpointSelector: { matchLabels: { app: 'victim' } }, ingress: [{}] }),
    // the attacker may reach the lab's first world prefix (any port), nothing else
    cnp('acf', 'attacker-world-a', { endpointSelector: { matchLabels: { app: 'attacker' } }, egress: [{ toCIDR: ['198.51.100.0/24'] }] }),
  ]);
  ips = Object.fromEntries(Object.entries(await lab.podIPs()).map(([k, v]) => [k.split('/')[1]!, v]));
  assert.ok(ips.pusher && ips.victim && ips.attacker);
  atk = podNet(lab, 'acf', 'attacker', ips.attacker);
  const svc = JSON.parse(await lab.ok(['get', 'services', '-n', 'acf', '-o', 'json'])) as { items: { metadata: { name: string }; spec: { clusterIP?: string } }[] };
  vip = svc.items.find((s) => s.metadata.name === 'pusher')?.spec.clusterIP ?? '';
  assert.ok(vip, 'the pusher service has a ClusterIP');
});
after(async () => {
  for (const p of procs) p.kill('SIGKILL');
  await lab.down();
});

/** A server-push stream into the victim: "tick" lines, one per poke. */
function ticks(ip: string, port: number) {
  const p = lab.spawnIn('acf', 'victim', [NODE, NET_TOOL, 'ticks', ip, String(port)]);
  procs.push(p);
  let out = '';
  p.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  const count = () => (out.match(/^tick$/gm) ?? []).length;
  return {
    async connected(): Promise<boolean> {
      for (let i = 0; i < 50 && !/connected/.test(out); i++) await new Promise((r) => setTimeout(r, 200));
      return /connected/.test(out);
    },
    async tickAfter(n: number, ms: number): Promise<boolean> {
      for (let i = 0; i < ms / 100 && count() <= n; i++) await new Promise((r) => setTimeout(r, 100));
      return count() > n;
    },
    count,
    out: () => out,
  };
}

async function poke(): Promise<void> {
  const r = await lab.exec('acf', 'victim', [NODE, NET_TOOL, 'poke', ips.pusher!, '8092']);
  assert.match(r.stdout, /"ok":true/, `poke: ${r.stdout}${r.stderr}`);
}

const synTo = (dst: string, dport: number, badChecksum: boolean) =>
  eth({ dst: atk.gw, src: atk.mac, type: ETH_IP }, ipv4({ src: atk.ip, dst, proto: TCP, badChecksum }, tcp({ src: atk.ip, dst, sport: 1024, dport, flags: SYN })));

test('a conntrack flood by one pod leaves another pod\'s connections working (server push, direct and through a ClusterIP)', async () => {
  const direct = ticks(ips.pusher!, 8091);
  const viaService = ticks(vip, 91);
  assert.equal(await direct.connected(), true, direct.out());
  assert.equal(await viaService.connected(), true, viaService.out());
  await poke();
  assert.equal(await direct.tickAfter(0, 3000), true, 'positive control: the push arrives');
  assert.equal(await viaService.tickAfter(0, 3000), true, 'positive control: the push arrives through the service');
  const n1 = direct.count(), n2 = viaService.count();
  // the flood, each SYN sent twice (a second lookup marks an LRU entry as used): 4 x 64,000
  // allowed SYNs (distinct tuples) and 2 x 64,000 with a bad IP checksum
  const t0 = Date.now();
  let sent = 0;
  for (const dport of [80, 8080, 443, 8443]) sent += floodFrames(atk.netns, 'eth0', synTo(WORLD_HOST, dport, false), 64_000, 14 + 20, 2);
  for (const dport of [81, 8081]) sent += floodFrames(atk.netns, 'eth0', synTo(WORLD_HOST, dport, true), 64_000, 14 + 20, 2);
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  await poke();
  assert.equal(await direct.tickAfter(n1, 4000), true, `after ${sent} flood frames in ${secs} s the push still arrives: ${direct.out().slice(-80)}`);
  assert.equal(await viaService.tickAfter(n2, 4000), true, `... and through the ClusterIP (reverse NAT intact): ${viaService.out().slice(-80)}`);
  assert.doesNotMatch(direct.out() + viaService.out(), /closed/, 'neither stream was reset');
});

test('a flood of denied SYNs by one pod neither hides another pod\'s flows nor goes unreported', async () => {
  const since = new Date();
  const v = await lab.exec('acf', 'victim', [NODE, NET_TOOL, 'poke', ips.pusher!, '8092']);
  assert.match(v.stdout, /"ok":true/);
  const victimFlows = async () => (await lab.flows(['--from-pod', 'acf/victim', '--since', since.toISOString(), '--last', '5000']))
    .filter((f) => f.verdict === 'FORWARDED' && f.l4?.TCP?.destination_port === 8092 && f.IP?.destination === ips.pusher);
  let mine: Flow[] = [];
  for (let i = 0; i < 20 && !mine.length; i++) {
    mine = await victimFlows();
    if (!mine.length) await new Promise((r) => setTimeout(r, 250));
  }
  assert.ok(mine.length > 0, 'positive control: the victim\'s connection is in the flows');
  // 100,000 denied SYNs: 200,000 events (policy verdict + drop), twice the ring of Hubble's 4095 flows fifty times over
  const t0 = Date.now();
  const sent = floodFrames(atk.netns, 'eth0', synTo(DENIED, 443, false), 100_000, 14 + 20);
  const secs = (Date.now() - t0) / 1000;
  assert.equal(sent, 100_000);
  await new Promise((r) => setTimeout(r, 3000)); // the agent has read everything by now
  assert.ok((await victimFlows()).length > 0, `the victim's flow is still there after the flood (${secs.toFixed(1)} s)`);
  const denied = (await lab.flows(['--from-pod', 'acf/attacker', '--since', since.toISOString(), '--last', '100000']))
    .filter((f) => f.verdict === 'DROPPED' && f.IP?.destination === DENIED);
  assert.ok(denied.length > 100, `the attacker's flood is visible: ${denied.length} DROPPED flows`);
  assert.ok(denied.length <= 1000 + Math.ceil(secs * 1000) + 200, `but bounded by its event budget (1000/s, burst 1000): ${denied.length} in ${secs.toFixed(1)} s`);
  assert.equal(denied[0]?.drop_reason_desc, 'POLICY_DENIED');
  // what the budget held back is reported: Hubble's lost events (PERF_EVENT_RING_BUFFER, the datapath's losses)
  let lost = 0;
  for (let i = 0; i < 10 && lost < 150_000; i++) {
    const out = await lab.ok(['observe', '--since', since.toISOString(), '--last', '100000', '-o', 'json']);
    lost = out.split('\n').filter((l) => l.includes('lost_events')).map((l) => JSON.parse(l) as { lost_events?: { num_events_lost?: string | number } })
      .reduce((a, x) => a + Number(x.lost_events?.num_events_lost ?? 0), 0);
    if (lost < 150_000) await new Promise((r) => setTimeout(r, 500));
  }
  assert.ok(lost >= 150_000, `the attacker's events held back are reported as lost events: ${lost}`);
  // ... and the agent names the endpoint whose budget was spent
  const log = readFileSync(lab.paths.agentLog('node1'), 'utf8');
  assert.match(log, /"pod":"acf\/attacker"[^\n]*events over the endpoint's budget/, 'the agent logs which endpoint lost events');
  assert.doesNotMatch(log, /"pod":"acf\/victim"[^\n]*events over the endpoint's budget/, 'and not the victim');
});
