/**
 * Agent restart: the kernel keeps enforcing while no agent runs. An established connection
 * survives the agent being killed, a denied connection stays denied while it is down, and the
 * restarted agent reads the events of the downtime from the pinned ring buffer, so the flows it
 * missed appear in `membrane observe`. An agent of a newer build starts over an older build's pins.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TestLab, REPO } from '../support/lab.ts';
import { until } from '../../support/until.ts';
import { readdirSync, rmSync } from 'node:fs';
import { BpfMap, BPF_F_MMAPABLE, MapType } from '../../../src/sys/bpf.ts';
import { decodeIpcacheKey, encodeIpcacheKey, encodeIpcacheVal } from '../../../src/datapath/linux/codec.ts';

const lab = new TestLab(`rs${process.pid % 10000}`);
let ip: Record<string, string> = {};

before(async () => {
  await lab.up();
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'rs' } },
    ...['server', 'client', 'intruder'].map((name) => ({
      apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'rs', labels: { app: name } },
      spec: { containers: [{ name: 'c', image: name === 'server' ? 'ealen/echo-server' : 'curlimages/curl', ports: name === 'server' ? [{ containerPort: 8080 }] : [] }] },
    })),
    {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'server-from-client', namespace: 'rs' },
      spec: { endpointSelector: { matchLabels: { app: 'server' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }] },
    },
  ]);
  const all = await lab.podIPs();
  ip = { server: all['rs/server']!, client: all['rs/client']!, intruder: all['rs/intruder']! };
});
after(async () => { await lab.down(); });

/** The highest "ok N" the hold client printed so far. */
const lastOk = (out: string) => Math.max(0, ...[...out.matchAll(/ok (\d+)/g)].map((m) => Number(m[1])));

test('kill the agent mid-connection: the connection survives, denial holds, missed flows come back', async () => {
  const pidFile = lab.paths.agentPidFile('node1');
  const endpoints = async () => (JSON.parse(await lab.ok(['get', 'endpoints', '-n', 'rs', '-o', 'json'])) as { items: { pod: string; id: number; identity: number }[] })
    .items.map((e) => `${e.pod}:${e.id}:${e.identity}`).sort();
  const before0 = await endpoints();
  // Ends when told (the stop file), once the restarted agent has carried it a while; the duration
  // only bounds a run that never gets there.
  const stopFile = join(await lab.dir, 'hold-stop');
  const hold = lab.spawnIn('rs', 'client', [join(REPO, 'bin/node'), join(REPO, 'test/integration/support/hold.ts'), ip.server!, '8080'], { HOLD_DURATION_MS: '120000', HOLD_STOP_FILE: stopFile });
  let out = '';
  hold.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number>((res) => hold.on('exit', (c) => res(c ?? 1)));
  try {
    for (let i = 0; i < 300 && !/ok 3\b/.test(out); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(out, /ok 3\b/, `the connection carries requests before the restart: ${out}`);

    // An entry an agent left for a pod deleted while no agent ran (written by hand before the kill:
    // the supervisor restarts the agent at once, and its first pass is the one that prunes): the
    // client's identity on an address nobody holds now. The restarted agent removes it.
    const clientIdentity = Number(before0.find((e) => e.startsWith('client:'))!.split(':')[2]);
    const ipcachePin = join(lab.paths.pinRoot('node1'), 'mb_ipcache');
    const stale = '10.244.1.250/32';
    const pinned = BpfMap.fromPin(ipcachePin);
    try { pinned.update(encodeIpcacheKey(stale), encodeIpcacheVal(clientIdentity)); } finally { pinned.close(); }
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 50; i++) {
      try { process.kill(pid, 0); } catch { break; }
      await new Promise((r) => setTimeout(r, 50));
    }
    const downAt = new Date();
    const before = lastOk(out);

    // No agent: policy is still enforced by the pinned programs and maps.
    const denied = await lab.probe('rs', 'intruder', [`${ip.server}:8080/tcp`]);
    assert.deepEqual(denied, { [`${ip.server}:8080/tcp`]: false });
    const allowed = await lab.probe('rs', 'client', [`${ip.server}:8080/tcp`]);
    assert.deepEqual(allowed, { [`${ip.server}:8080/tcp`]: true });
    await new Promise((r) => setTimeout(r, 1000));
    const during = lastOk(out);
    assert.ok(during > before, `requests keep flowing while the agent is down (${before} -> ${during})`);

    await lab.up(); // restarts the missing agent; endpoints and maps are picked up, not rebuilt
    await lab.settle();
    // The restarted agent has taken over (its maps written, its endpoints restored): the same
    // connection carries 25 more requests (5 s at one per 200 ms) without a break or a late answer.
    const atRestart = lastOk(out);
    await until('25 requests on the held connection after the restart', () => lastOk(out) >= atRestart + 25 || hold.exitCode !== null, 60_000);
    await writeFile(stopFile, '');
    assert.equal(await exited, 0, `the held connection never broke: ${out.slice(-200)}`);
    assert.match(out, /done \d+/);
    assert.ok(lastOk(out) >= atRestart + 25, `the connection carried requests after the restart (${atRestart} -> ${lastOk(out)})`);

    // The drop that happened while no agent ran is reported by the restarted agent.
    const drops = await lab.waitFlows(['--from-pod', 'rs/intruder', '--verdict', 'DROPPED', '--last', '100'], (fs) => fs.some((f) => Date.parse(String(f.time)) >= downAt.getTime() - 1000));
    assert.ok(drops.some((f) => Date.parse(String(f.time)) >= downAt.getTime() - 1000 && f.drop_reason_desc === 'POLICY_DENIED'),
      `a POLICY_DENIED flow from the downtime: ${JSON.stringify(drops.map((f) => [f.time, f.drop_reason_desc]))}`);

    // And the restarted agent enforces and reports as before: allowed traffic passes (and is
    // reported FORWARDED by the new agent), denied traffic stays denied.
    const afterRestart = new Date();
    assert.deepEqual(await lab.probe('rs', 'client', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: true });
    const fwd = await lab.waitFlows(['--from-pod', 'rs/client', '--verdict', 'FORWARDED', '--since', afterRestart.toISOString(), '--last', '100'],
      (fs) => fs.some((f) => f.IP?.destination === ip.server));
    assert.ok(fwd.some((f) => f.IP?.destination === ip.server && f.l4?.TCP?.destination_port === 8080), `a FORWARDED flow client -> server after the restart: ${JSON.stringify(fwd.slice(-3))}`);
    assert.deepEqual(await lab.probe('rs', 'intruder', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: false });
    // The stale entry is gone; the live pods' entries stayed (positive control).
    const inMap = (() => { const m = BpfMap.fromPin(ipcachePin); try { return [...m.keys()].map(decodeIpcacheKey); } finally { m.close(); } })();
    assert.ok(!inMap.includes(stale), `the stale ${stale} was removed by the restarted agent`);
    for (const p of ['server', 'client', 'intruder']) assert.ok(inMap.includes(`${ip[p]}/32`), `${p}'s ${ip[p]}/32 is still in the ipcache`);
    // Same endpoint IDs and identities: the pinned maps stay valid, nothing is renumbered.
    assert.deepEqual(await endpoints(), before0);
    const st = JSON.parse(await lab.ok(['status', '-o', 'json'])) as { endpoints: { total: number; ready: number; notReady: number } };
    assert.equal(st.endpoints.notReady, 0);
    assert.equal(st.endpoints.ready, st.endpoints.total);
  } finally {
    hold.kill('SIGKILL');
  }
});

// An upgrade without `membrane down`: the agent that starts finds maps an older build pinned with
// other definitions (mb_endpoints preallocated, mb_config not mappable, mb_policy of another value
// layout). It replaces them (src/datapath/linux/pins.ts), and the pods keep their policy.
test('an agent over an older build\'s pins: the maps of another definition are replaced, policy holds', async () => {
  const pin = (n: string) => join(lab.paths.pinRoot('node1'), n);
  const BPF_F_NO_PREALLOC = 1;
  /** the pinned map `n` replaced by `make()`'s, with the current one's entries when `copy` */
  const pinOlder = (n: string, make: () => BpfMap, copy: boolean) => {
    const cur = BpfMap.fromPin(pin(n));
    const older = make();
    try {
      if (copy) for (const k of cur.keys()) { const v = cur.lookup(k); if (v) older.update(k, v); }
      rmSync(pin(n));
      older.pin(pin(n));
    } finally {
      cur.close();
      older.close();
    }
  };
  // the agent still runs on its own maps (its fds): what it writes now reaches only those
  pinOlder('mb_endpoints', () => BpfMap.create(MapType.HASH, 'mb_endpoints', 4, 40, 4096), true);
  pinOlder('mb_config', () => BpfMap.create(MapType.ARRAY, 'mb_config', 4, 32, 1), true);
  pinOlder('mb_policy', () => BpfMap.create(MapType.LPM_TRIE, 'mb_policy', 15, 4, 1024 * 1024, { flags: BPF_F_NO_PREALLOC }), false);
  const info = (n: string) => { const m = BpfMap.fromPin(pin(n)); try { return m.info; } finally { m.close(); } };
  const older = Object.fromEntries(['mb_endpoints', 'mb_config', 'mb_policy'].map((n) => [n, info(n).id]));
  const pid = Number((await readFile(lab.paths.agentPidFile('node1'), 'utf8')).trim());
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 50; i++) {
    try { process.kill(pid, 0); } catch { break; }
    await new Promise((r) => setTimeout(r, 50));
  }
  await lab.up();
  await lab.settle();
  for (const [n, id] of Object.entries(older)) assert.notEqual(info(n).id, id, `${n} replaced`);
  assert.equal(info('mb_endpoints').flags & BPF_F_NO_PREALLOC, BPF_F_NO_PREALLOC);
  assert.equal(info('mb_config').flags & BPF_F_MMAPABLE, BPF_F_MMAPABLE);
  assert.deepEqual(readdirSync(lab.paths.pinRoot('node1')).filter((n) => n.endsWith(':old')), [], 'no pin left aside');
  assert.deepEqual(await lab.probe('rs', 'client', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: true }, 'allowed after the upgrade');
  assert.deepEqual(await lab.probe('rs', 'intruder', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: false }, 'denied after the upgrade');
  const st = JSON.parse(await lab.ok(['status', '-o', 'json'])) as { endpoints: { total: number; ready: number } };
  assert.equal(st.endpoints.ready, st.endpoints.total);
});
