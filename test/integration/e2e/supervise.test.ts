/**
 * Issue 14, "never go dark": `kill -9` of the agent under load. The supervisor restarts it within
 * 5 s with the same endpoints and identities, the datapath enforces throughout from its pinned
 * maps (a denied connection stays denied while no agent runs, an established L4 stream is never
 * cut), and L7 fails closed while the proxies are away: a denied name never resolves, a denied
 * HTTP request never gets through, and both L7 paths serve again after the restart. No lookup of
 * the allowed name fails (the resolver's retries span the restart).
 *
 * Load in the client pod (test/integration/e2e/l7-load.ts): DNS lookups of an allowed and a denied
 * name, GET /v1/models on one keep-alive connection and on new connections through the HTTP
 * proxy, POST /v1/chat/completions (denied: 403) on new connections; beside it a long TCP stream
 * to a pod (support/hold.ts).
 *
 * The DNS, HTTP and TLS proxies run in their own supervised process (src/lab/node-proxy.ts): the
 * agent's kill resets none of their connections and does not stop name resolution (an allowed
 * name whose IPs the pinned datapath already allows is answered while no agent runs); their own
 * kill is restarted and fails closed meanwhile (steered DNS and HTTP dropped with 178, never
 * passed to the real server unjudged).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TestLab, REPO } from '../support/lab.ts';
import { callAgent } from '../../../src/agent/api-client.ts';
import type { StatusView } from '../../../src/agent/views.ts';

// the whole pid: the orphan sweep (support/lab.ts) takes the name's digits for a test process's pid
const lab = new TestLab(`sv${process.pid}`);
const NS = 'sv';
let ip: Record<string, string> = {};

const pod = (name: string, image: string, ports: number[] = []) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels: { app: name } },
  spec: { containers: [{ name: 'c', image, ports: ports.map((containerPort) => ({ containerPort })) }] },
});

before(async () => {
  await lab.up();
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    pod('server', 'ealen/echo-server', [8080]), pod('client', 'curlimages/curl'), pod('intruder', 'curlimages/curl'),
    {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'server-from-client', namespace: NS },
      spec: { endpointSelector: { matchLabels: { app: 'server' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }] },
    },
    {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'client-out', namespace: NS },
      spec: {
        endpointSelector: { matchLabels: { app: 'client' } },
        egress: [
          { toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchName: 'api.openai.com' }] } }] },
          { toFQDNs: [{ matchName: 'api.openai.com' }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/v1/models' }] } }] },
          { toEndpoints: [{ matchLabels: { app: 'server' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] },
        ],
      },
    },
  ]);
  const all = await lab.podIPs();
  ip = { server: all[`${NS}/server`]!, client: all[`${NS}/client`]!, intruder: all[`${NS}/intruder`]! };
});
after(async () => {
  // SV_KEEP_LOGS=dir keeps the node's logs (agent, supervisor) for a look after a failure
  if (process.env.SV_KEEP_LOGS) await cp(lab.paths.nodeDir('node1'), process.env.SV_KEEP_LOGS, { recursive: true, filter: (f) => !f.endsWith('.sock') }).catch(() => {});
  await lab.down();
});

type Line = { t: number; at: number; k: string; name?: string; allowed?: boolean; rcode?: string; ips?: string[]; status?: number; err?: string; method?: string; ms?: number };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The highest "ok N" the hold client printed so far. */
const lastOk = (out: string) => Math.max(0, ...[...out.matchAll(/ok (\d+)/g)].map((m) => Number(m[1])));

/** The L7 load (l7-load.ts) in the client pod until `stopFile` exists (or `durationMs`): its output and parsed lines. */
function startL7Load(stopFile: string, durationMs: number, dnsTimeoutMs = 5000) {
  const load = lab.spawnIn(NS, 'client', [join(REPO, 'bin/node'), join(REPO, 'test/integration/e2e/l7-load.ts')], {
    NAME_OK: 'api.openai.com', NAME_DENIED: 'echo-b.world.lab', OK_PATH: '/v1/models', DENIED_PATH: '/v1/chat/completions', DURATION_MS: String(durationMs), STOP_FILE: stopFile, DNS_TIMEOUT_MS: String(dnsTimeoutMs),
  });
  let out = '';
  let err = '';
  load.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  load.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exit = new Promise<number>((res) => load.on('exit', (c) => res(c ?? 1)));
  const lines = () => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Line);
  return { load, out: () => out, err: () => err, exit, lines };
}

/** Results of the kill run, for the HA expectations below. */
let run: { lines: Line[]; killAt: number; backAt: number; loadStart: number } | undefined;

test('kill -9 of the agent under load: back within 5 s with the same endpoints and identities; enforcement and L7 fail closed throughout', async () => {
  const socket = lab.paths.agentSocket('node1');
  const endpoints = async () => (JSON.parse(await lab.ok(['get', 'endpoints', '-n', NS, '-o', 'json'])) as { items: { pod: string; id: number; identity: number }[] })
    .items.map((e) => `${e.pod}:${e.id}:${e.identity}`).sort();
  const identities = async () => (JSON.parse(await lab.ok(['get', 'identities', '-o', 'json'])) as { items: { id: number; labels: string[] }[] })
    .items.map((i) => `${i.id}=${[...i.labels].sort().join(',')}`).sort();
  const st0 = await callAgent<StatusView>(socket, 'GET', '/v1/status');

  const stopFile = join(await lab.dir, 'stop-load');
  const hold = lab.spawnIn(NS, 'client', [join(REPO, 'bin/node'), join(REPO, 'test/integration/support/hold.ts'), ip.server!, '8080'], { HOLD_DURATION_MS: '300000' });
  let holdOut = '';
  hold.stdout!.on('data', (d: Buffer) => { holdOut += d.toString(); });
  const holdExit = new Promise<number>((res) => hold.on('exit', (c) => res(c ?? 1)));
  const loadStart = Date.now();
  const { load, out: loadText, err: loadStderr, exit: loadExit, lines } = startL7Load(stopFile, 300_000);
  try {
    // Positive controls before the kill: every L7 path serves, the stream flows.
    for (let i = 0; i < 900; i++) {
      const ls = lines();
      if (ls.some((l) => l.k === 'keep' && l.status === 200) && ls.some((l) => l.k === 'dns' && l.allowed && l.rcode === 'NOERROR')
        && ls.some((l) => l.k === 'new' && l.method === 'POST' && l.status === 403) && /ok 3\b/.test(holdOut)) break;
      await sleep(100);
    }
    const pre = lines();
    assert.ok(pre.some((l) => l.k === 'keep' && l.status === 200), `keep-alive GET served before the kill: ${loadText().slice(-500)} ${loadStderr().slice(-500)}`);
    assert.ok(pre.some((l) => l.k === 'dns' && l.allowed && l.rcode === 'NOERROR' && l.ips?.includes('198.51.100.20')), 'allowed name resolves before the kill');
    assert.ok(pre.some((l) => l.k === 'dns' && !l.allowed && l.rcode === 'REFUSED'), 'denied name REFUSED before the kill');
    assert.ok(pre.some((l) => l.k === 'new' && l.method === 'POST' && l.status === 403), 'denied request 403 before the kill');
    assert.match(holdOut, /ok 3\b/);
    await sleep(1500);

    // the state just before the kill (the FQDN identity of the allowed name exists by now)
    const eps0 = await endpoints();
    const ids0 = await identities();
    assert.ok(ids0.some((i) => i.includes('fqdn:api.openai.com')), `the allowed name's FQDN identity: ${ids0.join(' ')}`);
    const pid = Number((await readFile(lab.paths.agentPidFile('node1'), 'utf8')).trim());
    assert.equal(pid, st0.agent.pid);
    const proxyPid = (await readFile(join(lab.paths.nodeDir('node1'), 'l7proxy.pid'), 'utf8')).trim();
    const killAt = Date.now();
    process.kill(pid, 'SIGKILL');
    // The supervisor brings it back: the first answer of a new pid (polled beside the probe below).
    const back = (async () => {
      for (;;) {
        try {
          const st = await callAgent<StatusView>(socket, 'GET', '/v1/status', undefined, 1000);
          if (st.agent.pid !== pid) return { st, at: Date.now() };
        } catch { /* not back yet */ }
        if (Date.now() - killAt > 30_000) return { st: undefined, at: Date.now() };
        await sleep(25);
      }
    })();
    // While no agent runs: denied stays denied (pinned maps).
    const during = await lab.probe(NS, 'intruder', [`${ip.server}:8080/tcp`]);
    assert.deepEqual(during, { [`${ip.server}:8080/tcp`]: false });
    const { st, at: backAt } = await back;
    // what the restarted agent did, with times (for a slow restart's why)
    const startLog = (await readFile(lab.paths.agentLog('node1'), 'utf8')).split('\n').filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { time?: string; msg?: string; subsys?: string; loadMs?: number })
      .filter((l) => l.time && Date.parse(l.time) >= killAt).map((l) => `+${Date.parse(l.time!) - killAt}ms ${l.subsys ?? ''} ${l.msg ?? ''}${l.loadMs ? ` (${Math.round(l.loadMs)} ms)` : ''}`);
    startLog.unshift(...(await readFile(join(lab.paths.nodeDir('node1'), 'supervisor.log'), 'utf8')).split('\n').filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { time?: string; msg?: string }).filter((l) => l.time && Date.parse(l.time) >= killAt - 1000).map((l) => `+${Date.parse(l.time!) - killAt}ms supervisor ${l.msg}`));
    process.stdout.write(`# restart log:\n# ${startLog.slice(0, 40).join('\n# ')}\n`);
    assert.ok(st && st.agent.pid !== pid, 'a new agent answers');
    assert.equal(st.agent.restarts, (st0.agent.restarts ?? 0) + 1);
    assert.equal(st.agent.lastExit?.reason, 'killed by SIGKILL');
    await lab.settle();
    assert.deepEqual(await endpoints(), eps0, 'same endpoints (ids and identities)');
    assert.deepEqual(await identities(), ids0, 'same identities');
    assert.deepEqual(await lab.probe(NS, 'intruder', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: false });
    assert.deepEqual(await lab.probe(NS, 'client', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: true });

    // load for a while after the restart, then stop it
    const okAtBack = lastOk(holdOut);
    await sleep(8000);
    await writeFile(stopFile, '');
    assert.equal(await loadExit, 0, loadStderr().slice(-1000));
    assert.doesNotMatch(holdOut, /fail/, `the long TCP stream was never cut: ${holdOut.slice(-200)}`);
    assert.ok(lastOk(holdOut) > okAtBack, `the stream carries requests after the restart (${okAtBack} -> ${lastOk(holdOut)})`);
    void holdExit;
    const all = lines();
    {
      const around = all.filter((l) => l.at >= killAt - 500);
      const count = (f: (l: Line) => boolean) => around.filter(f).length;
      // the load spans the kill (a sub-second restart may see no line inside the downtime)
      assert.ok(all.some((l) => l.at < killAt) && all.some((l) => l.at > backAt), 'the load ran across the kill');
      process.stdout.write(`# agent back after ${backAt - killAt} ms; from the kill on: allowed lookups ${count((l) => l.k === 'dns' && !!l.allowed)} (failed ${count((l) => l.k === 'dns' && !!l.allowed && l.rcode !== 'NOERROR')}, slowest ${Math.max(0, ...around.filter((l) => l.k === 'dns' && l.allowed).map((l) => l.ms ?? 0))} ms); `
        + `denied lookups ${JSON.stringify(around.filter((l) => l.k === 'dns' && !l.allowed).map((l) => l.rcode))}; keep-alive ${count((l) => l.k === 'keep' && l.status === 200)} ok, errors ${JSON.stringify(around.filter((l) => l.k === 'keep' && l.err).map((l) => l.err))}; `
        + `new GET ${JSON.stringify(around.filter((l) => l.k === 'new' && l.method === 'GET').map((l) => l.status ?? l.err))}; POST ${JSON.stringify(around.filter((l) => l.k === 'new' && l.method === 'POST').map((l) => l.status ?? l.err))}\n`);
    }
    assert.equal(all.at(-1)?.k, 'end');
    // Never an unjudged pass: the denied name never resolves, the denied request never gets a 200.
    const deniedDns = all.filter((l) => l.k === 'dns' && !l.allowed);
    assert.deepEqual([...new Set(deniedDns.map((l) => l.rcode))].filter((r) => r !== 'REFUSED' && r !== 'TIMEOUT'), [], 'denied name: only REFUSED (or no answer while the proxy is away)');
    assert.ok(deniedDns.every((l) => (l.ips ?? []).length === 0));
    const posts = all.filter((l) => l.k === 'new' && l.method === 'POST');
    assert.ok(posts.every((l) => l.status === 403 || (l.status === undefined && l.err)), `denied requests: 403 or no connection, never forwarded: ${JSON.stringify(posts.filter((l) => l.status !== 403 && !l.err))}`);
    // After the restart every L7 path serves again (positive controls).
    const after = all.filter((l) => l.at > backAt + 2000);
    assert.ok(after.some((l) => l.k === 'dns' && l.allowed && l.rcode === 'NOERROR'), 'allowed name resolves after the restart');
    assert.ok(after.some((l) => l.k === 'dns' && !l.allowed && l.rcode === 'REFUSED'), 'denied name REFUSED after the restart');
    assert.ok(after.some((l) => l.k === 'new' && l.method === 'GET' && l.status === 200), 'new GET served after the restart');
    assert.ok(after.some((l) => l.k === 'new' && l.method === 'POST' && l.status === 403), 'denied request 403 after the restart');
    assert.ok(after.some((l) => l.k === 'keep' && l.status === 200), 'keep-alive GET served after the restart');
    run = { lines: all, killAt, backAt, loadStart };
    assert.ok(backAt - killAt <= 5000, `the agent is back within 5 s (took ${backAt - killAt} ms)`);
    // The DNS proxy is not the agent's: no lookup of the allowed name fails, and while no agent ran
    // its lookups were answered (its IP is in the pinned ipcache with an identity the client's
    // policy allows) without waiting for the agent.
    assert.deepEqual(all.filter((l) => l.k === 'dns' && l.allowed && l.rcode !== 'NOERROR').map((l) => `${l.at - killAt}ms ${l.rcode}`), []);
    assert.equal((await readFile(join(lab.paths.nodeDir('node1'), 'l7proxy.pid'), 'utf8')).trim(), proxyPid, 'the proxy process ran on across the agent kill');
    const whileAway = all.filter((l) => l.k === 'dns' && l.allowed && l.at - (l.ms ?? 0) > killAt + 100 && l.at < backAt - 100);
    process.stdout.write(`# allowed lookups asked and answered while no agent ran: ${whileAway.length}, slowest ${Math.max(0, ...whileAway.map((l) => l.ms ?? 0))} ms\n`);
    if (backAt - killAt > 1000) assert.ok(whileAway.length > 0, 'lookups were answered while no agent ran');
    assert.ok(whileAway.every((l) => l.rcode === 'NOERROR' && l.ips?.includes('198.51.100.20')));
  } finally {
    hold.kill('SIGKILL');
    load.kill('SIGKILL');
  }
});

// The HTTP/TLS proxies run in their own supervised process (the lab's default, --external-envoy-proxy):
// the agent's kill does not touch their connections.
test('HA proxies: no established L7 connection is reset across the agent kill', () => {
  assert.ok(run, 'the kill run completed');
  const around = run.lines.filter((l) => l.at >= run!.killAt - 500);
  assert.ok(around.some((l) => l.k === 'keep' && l.status === 200), 'positive control: the keep-alive connection served across the kill');
  assert.deepEqual(around.filter((l) => l.k === 'keep' && l.err).map((l) => l.err), []);
  // the allowed request on new connections too: the proxy judged them with its last snapshot
  assert.deepEqual(around.filter((l) => l.k === 'new' && l.method === 'GET' && l.err).map((l) => `${l.at - run!.killAt}ms ${l.err}`), []);
});

test('kill -9 of the L7 proxy process: restarted; redirected traffic and DNS fail closed (178) meanwhile, never pass unjudged; the agent serves on', async () => {
  const socket = lab.paths.agentSocket('node1');
  const pfiles = { pid: join(lab.paths.nodeDir('node1'), 'l7proxy.pid'), sup: join(lab.paths.nodeDir('node1'), 'l7proxy-supervisor.json') };
  const supState = async () => JSON.parse(await readFile(pfiles.sup, 'utf8')) as { restarts: number; pid?: number; lastExit?: { reason: string } };
  const st0 = await callAgent<StatusView>(socket, 'GET', '/v1/status');
  const sup0 = await supState();
  const stopFile = join(await lab.dir, 'stop-load-proxy');
  // lookups give up after 2 s (not the stub's 5 s): the ones made while the proxy is away show as TIMEOUT
  const { load, out: loadText, err: loadStderr, exit: loadExit, lines } = startL7Load(stopFile, 120_000, 2000);
  try {
    for (let i = 0; i < 600 && !(lines().some((l) => l.k === 'keep' && l.status === 200) && lines().some((l) => l.k === 'new' && l.method === 'POST' && l.status === 403)
      && lines().some((l) => l.k === 'dns' && l.allowed && l.rcode === 'NOERROR')); i++) await sleep(100);
    assert.ok(lines().some((l) => l.k === 'dns' && l.allowed && l.rcode === 'NOERROR'), 'allowed name resolves before the kill');
    assert.ok(lines().some((l) => l.k === 'keep' && l.status === 200), `keep-alive GET served before the kill: ${loadText().slice(-500)} ${loadStderr().slice(-500)}`);
    const pid = Number((await readFile(pfiles.pid, 'utf8')).trim());
    assert.equal(sup0.pid, pid, 'the supervisor runs the proxy whose pid file this is');
    const since = new Date(Date.now() - 100);
    const killAt = Date.now();
    process.kill(pid, 'SIGKILL');
    // the supervisor brings it back: a new pid that says it is ready, whose rows the agent's status shows
    let backAt = 0;
    let newPid = 0;
    for (; Date.now() - killAt < 30_000; await sleep(25)) {
      const np = (await supState().catch(() => undefined))?.pid;
      if (!np || np === pid) continue;
      const ready = (await readFile(join(lab.paths.nodeDir('node1'), 'l7proxy.log'), 'utf8')).includes(`"pid":${np},"msg":"L7 proxy ready"`);
      const st = ready ? await callAgent<StatusView>(socket, 'GET', '/v1/status', undefined, 2000).catch(() => undefined) : undefined;
      if (st?.proxies.some((p) => p.name === 'http (egress, TCP)' && /listening/.test(p.state)) && st.proxies.some((p) => p.name === 'dns (egress, UDP)' && /listening/.test(p.state))) {
        backAt = Date.now();
        newPid = np;
        break;
      }
    }
    assert.ok(backAt, 'the proxy is back (its rows in the agent status)');
    const sup1 = await supState();
    assert.equal(sup1.restarts, sup0.restarts + 1);
    assert.equal(sup1.lastExit?.reason, 'killed by SIGKILL');
    assert.notEqual(sup1.pid, pid);
    // the agent was not touched
    const st1 = await callAgent<StatusView>(socket, 'GET', '/v1/status');
    assert.equal(st1.agent.pid, st0.agent.pid);
    assert.equal(st1.agent.restarts, st0.agent.restarts);
    await sleep(5000);
    await writeFile(stopFile, '');
    assert.equal(await loadExit, 0, loadStderr().slice(-1000));
    const all = lines();
    process.stdout.write(`# proxy back after ${backAt - killAt} ms; from the kill on: keep-alive ${JSON.stringify(all.filter((l) => l.at >= killAt && l.k === 'keep').map((l) => l.status ?? l.err).slice(0, 12))}; `
      + `new GET ${JSON.stringify(all.filter((l) => l.at >= killAt && l.k === 'new' && l.method === 'GET').map((l) => l.status ?? l.err).slice(0, 12))}; POST ${JSON.stringify(all.filter((l) => l.at >= killAt && l.k === 'new' && l.method === 'POST').map((l) => l.status ?? l.err).slice(0, 12))}\n`);
    // never an unjudged pass: the denied request is 403 or has no connection, before, during and after
    const posts = all.filter((l) => l.k === 'new' && l.method === 'POST');
    assert.ok(posts.every((l) => l.status === 403 || (l.status === undefined && l.err)), `denied requests never forwarded: ${JSON.stringify(posts.filter((l) => l.status !== 403 && !l.err))}`);
    // fail closed while it was away: the redirected SYNs were dropped for want of a listener (178)
    const drops = (await lab.flows(['--from-pod', `${NS}/client`, '--since', since.toISOString(), '--last', '10000', '--type', 'drop']))
      .filter((f) => f.drop_reason_desc === 'SOCKET_LOOKUP_FAILED');
    assert.ok(drops.length > 0, 'drops 178 (no proxy listener) while the proxy was away');
    assert.ok(drops.every((f) => f.l4?.TCP?.destination_port === 80 || f.l4?.UDP?.destination_port === 53), `only the redirected ports: ${JSON.stringify(drops.map((f) => f.l4))}`);
    // DNS is the proxy process's: steered queries were dropped while it was away (never sent on to
    // the real server), no lookup was answered between the kill and the new process listening,
    // and the denied name never resolved
    assert.ok(drops.some((f) => f.l4?.UDP?.destination_port === 53), `DNS queries dropped (178) while the proxy was away: ${JSON.stringify(drops.map((f) => f.l4))}`);
    const listenAt = (await readFile(join(lab.paths.nodeDir('node1'), 'l7proxy.log'), 'utf8')).split('\n').filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { time?: string; pid?: number; msg?: string; subsys?: string })
      .find((l) => l.pid === newPid && l.msg === 'DNS proxy listening')?.time;
    assert.ok(listenAt, 'the new proxy process says when its DNS proxy listens');
    const gap = all.filter((l) => l.k === 'dns' && l.at > killAt + 100 && l.at < Date.parse(listenAt));
    process.stdout.write(`# DNS while the proxy was away (${Date.parse(listenAt) - killAt} ms): ${JSON.stringify(gap.map((l) => `${l.allowed ? 'ok' : 'denied'}:${l.rcode}`))}\n`);
    assert.deepEqual(gap.filter((l) => l.rcode !== 'TIMEOUT').map((l) => `${l.at - killAt}ms ${l.name} ${l.rcode}`), [], 'no answer while no DNS proxy listened');
    assert.ok(all.filter((l) => l.k === 'dns' && !l.allowed).every((l) => (l.ips ?? []).length === 0 && (l.rcode === 'REFUSED' || l.rcode === 'TIMEOUT')), 'the denied name never resolved');
    // positive controls after the restart
    const after = all.filter((l) => l.at > backAt + 1000);
    assert.ok(after.some((l) => l.k === 'keep' && l.status === 200), 'keep-alive GET served after the restart (on a new connection)');
    assert.ok(after.some((l) => l.k === 'new' && l.method === 'GET' && l.status === 200), 'new GET served after the restart');
    assert.ok(after.some((l) => l.k === 'new' && l.method === 'POST' && l.status === 403), 'denied request 403 after the restart');
    assert.ok(after.some((l) => l.k === 'dns' && l.allowed && l.rcode === 'NOERROR'), 'allowed name resolves after the restart');
    assert.ok(after.some((l) => l.k === 'dns' && !l.allowed && l.rcode === 'REFUSED'), 'denied name REFUSED after the restart');
  } finally {
    load.kill('SIGKILL');
  }
});
