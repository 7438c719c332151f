/**
 * HTTP proxy benchmark in a lab (root), issue 14's two layouts side by side: the same traffic
 * through the L7 HTTP proxy of a lab whose proxies run in their own supervised process
 * (--external-envoy-proxy, the lab's default) and of a lab whose proxies run inside the agent.
 * bench/http/run.ts measures the proxy code as a bare process on loopback; this one measures the
 * user's path: wrk in a client pod -> the datapath steers to the node's HTTP proxy -> an origin
 * pod (HAProxy answering 200 itself), with the client's egress policy holding 100 HTTP rules
 * (`GET /api/v1/resource<i>`, requests match the last), flows and metrics on.
 *
 * Both labs are up at once and measured in turn (interleaved rounds, the order alternating), so
 * a change in the machine's load falls on both. Measures, per layout:
 *   keep-alive req/s      wrk -t1 -c50 in the client pod
 *   Connection: close     wrk -t1 -c50 -H 'Connection: close' (a new connection per request)
 *   CPU per request       the agent's plus the proxy process's user+system time (/proc) over
 *                         wrk's requests: robust where req/s is noise on a shared machine
 *
 *   bin/node bench/http/lab.ts [--secs 6] [--rounds 3] [--rules 100] [--name httplab] [--keep]
 * The labs are <name>o (own process) and <name>a (in the agent), state under /run/membrane-bench.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { labPaths } from '../../src/common/paths.ts';
import { buildConfig } from '../../src/common/config.ts';
import { proxyFiles } from '../../src/proxy/feed/wire.ts';
import { cpuUs, haproxyCfg, median, parseWrk, type WrkResult } from '../support.ts';

const { values } = parseArgs({ options: {
  secs: { type: 'string', default: '6' }, rounds: { type: 'string', default: '3' }, rules: { type: 'string', default: '100' },
  name: { type: 'string', default: `httplab${process.pid % 10000}` }, keep: { type: 'boolean', default: false },
} });
const SECS = Number(values.secs), ROUNDS = Number(values.rounds), RULES = Number(values.rules);
const REPO = resolve(import.meta.dirname, '../..');
const PATH = `/api/v1/resource${RULES - 1}`;
const dir = mkdtempSync(join(tmpdir(), 'bench-httplab-'));

type LayoutName = 'own process' | 'in the agent';
interface Layout { name: LayoutName; env: NodeJS.ProcessEnv; origin: string; agentPid: number; proxyPid?: number }
const layouts: Layout[] = ([['own process', 'o', '1'], ['in the agent', 'a', '0']] as const).map(([name, suffix, external]) => {
  const lab = `${values.name}${suffix}`;
  return { name, env: { ...process.env, MEMBRANE_LAB: lab, MEMBRANE_STATE_DIR: join('/run/membrane-bench', lab), MEMBRANE_EXTERNAL_ENVOY_PROXY: external, NO_COLOR: '1' }, origin: '', agentPid: 0 };
});

const membrane = (l: Layout, args: string[], timeout = 180_000) => execFileSync(join(REPO, 'bin/membrane'), args, { env: l.env, timeout, maxBuffer: 64 << 20 }).toString();
const inClient = (l: Layout, cmd: string[], timeout = 120_000) => membrane(l, ['exec', '-n', 'bench', 'client', '--', ...cmd], timeout);
const pidOf = (file: string) => Number(readFileSync(file, 'utf8').trim());

function objects(): object[] {
  const cfg = haproxyCfg(dir, 'origin', 'frontend origin\n  bind :8080\n  http-request return status 200 content-type text/plain string "ok"\n');
  const pod = (name: string, extra: object) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'bench', labels: { app: name } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl', ...extra }] } });
  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bench' } },
    pod('origin', { command: ['haproxy', '-db', '-f', cfg] }), pod('client', {}),
    {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'client-l7', namespace: 'bench' },
      spec: {
        endpointSelector: { matchLabels: { app: 'client' } },
        egress: [{
          toEndpoints: [{ matchLabels: { app: 'origin' } }],
          toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: Array.from({ length: RULES }, (_, i) => ({ method: 'GET', path: `/api/v1/resource${i}` })) } }],
        }],
      },
    },
  ];
}

function wrk(l: Layout, extra: string[] = []): { w: WrkResult; agent: number; proxy: number } {
  const pids = [l.agentPid, l.proxyPid];
  const c0 = pids.map(cpuUs);
  const out = inClient(l, ['wrk', '-t1', '-c50', `-d${SECS}s`, '--latency', ...extra, `http://${l.origin}:8080${PATH}`], (SECS + 60) * 1000);
  const c1 = pids.map(cpuUs);
  const w = parseWrk(out);
  const per = (i: number) => (c1[i]! - c0[i]!) / Math.max(1, w.requests);
  return { w, agent: per(0), proxy: per(1) };
}

const load = () => loadavg().map((x) => x.toFixed(1)).join(' ');

try {
  const objs = objects();
  const file = join(dir, 'bench.yaml');
  writeFileSync(file, objs.map((o) => stringify(o)).join('---\n'));
  for (const l of layouts) {
    membrane(l, ['up']);
    membrane(l, ['apply', '-f', file]);
    const pods = JSON.parse(membrane(l, ['get', 'pods', '-n', 'bench', '-o', 'json'])) as { items: { metadata: { name: string }; status?: { podIP?: string } }[] };
    l.origin = pods.items.find((p) => p.metadata.name === 'origin')!.status!.podIP!;
    const paths = labPaths(buildConfig({ env: l.env }));
    l.agentPid = pidOf(paths.agentPidFile('node1'));
    const pf = proxyFiles(paths.nodeDir('node1')).pid;
    l.proxyPid = existsSync(pf) ? pidOf(pf) : undefined;
    // the layout is what the bench says it is, and the requests do go through the L7 proxy
    if ((l.name === 'own process') !== (l.proxyPid !== undefined)) throw new Error(`${l.env.MEMBRANE_LAB}: expected ${l.name}, proxy process ${l.proxyPid ?? 'absent'}`);
    const code = (p: string) => inClient(l, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', `http://${l.origin}:8080${p}`]).trim();
    const [allowed, denied] = [code(PATH), code('/not/a/rule')];
    if (allowed !== '200' || denied !== '403') throw new Error(`${l.env.MEMBRANE_LAB}: ${PATH} -> ${allowed}, /not/a/rule -> ${denied} (want 200, 403: the L7 policy)`);
    inClient(l, ['wrk', '-t1', '-c10', '-d2s', `http://${l.origin}:8080${PATH}`]); // warm up (JIT, pools)
    console.error(`${l.name}: lab ${l.env.MEMBRANE_LAB} up, agent ${l.agentPid}, proxy process ${l.proxyPid ?? '(none: in the agent)'}, origin ${l.origin}`);
  }

  type Row = { layout: LayoutName; round: number; load: string; ka: ReturnType<typeof wrk>; close: ReturnType<typeof wrk> };
  const rows: Row[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    for (const l of r % 2 === 0 ? layouts : [...layouts].reverse()) {
      const at = load();
      const ka = wrk(l);
      const close = wrk(l, ['-H', 'Connection: close']);
      rows.push({ layout: l.name, round: r + 1, load: at, ka, close });
      const cpu = (x: ReturnType<typeof wrk>) => `${(x.agent + x.proxy).toFixed(1)} µs (agent ${x.agent.toFixed(1)} + proxy ${x.proxy.toFixed(1)})`;
      console.error(`round ${r + 1} ${l.name} [load ${at}]: keep-alive ${ka.w.rps.toFixed(0)} req/s, CPU/request ${cpu(ka)}, errors ${ka.w.errors}; ` +
        `Connection: close ${close.w.rps.toFixed(0)} req/s, CPU/request ${cpu(close)}, errors ${close.w.errors}`);
    }
  }
  const med = (name: LayoutName, f: (x: Row) => number) => median(rows.filter((x) => x.layout === name).map(f));
  const line = (label: string, f: (x: Row) => number, digits: number) => {
    const [o, a] = [med('own process', f), med('in the agent', f)];
    return `| ${label} | ${o.toFixed(digits)} | ${a.toFixed(digits)} | ${(o / a).toFixed(2)} |`;
  };
  console.log([
    `HTTP proxy in a lab, ${RULES} HTTP rules, wrk -t1 -c50 in a pod, median of ${ROUNDS} interleaved rounds of ${SECS} s; ` +
    `Node ${process.version}, ${cpus().length} vCPU, load average at the end ${load()}.`, '',
    '| measure | own process | in the agent | own / agent |',
    '|---|---|---|---|',
    line('keep-alive req/s', (x) => x.ka.w.rps, 0),
    line('keep-alive CPU per request, agent + proxy process (µs)', (x) => x.ka.agent + x.ka.proxy, 1),
    line('`Connection: close` req/s', (x) => x.close.w.rps, 0),
    line('`Connection: close` CPU per request, agent + proxy process (µs)', (x) => x.close.agent + x.close.proxy, 1),
    '',
    `Errors (non-2xx, socket): own process ${rows.filter((x) => x.layout === 'own process').reduce((s, x) => s + x.ka.w.errors + x.close.w.errors, 0)}, ` +
    `in the agent ${rows.filter((x) => x.layout === 'in the agent').reduce((s, x) => s + x.ka.w.errors + x.close.w.errors, 0)}.`,
  ].join('\n'));
} finally {
  for (const l of layouts) {
    if (values.keep) console.error(`kept: MEMBRANE_LAB=${l.env.MEMBRANE_LAB} MEMBRANE_STATE_DIR=${l.env.MEMBRANE_STATE_DIR}`);
    else try { membrane(l, ['down'], 120_000); } catch (e) { console.error(`down ${l.env.MEMBRANE_LAB}: ${(e as Error).message}`); }
  }
  rmSync(dir, { recursive: true, force: true });
}
