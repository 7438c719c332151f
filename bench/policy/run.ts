/**
 * Policy computation at scale (spec/performance.md goal 9, Cilium's scalability scenario scaled
 * to one node): 10,000 identities, 250 rules (125 L4 + 125 L7 HTTP) selecting 100 local
 * endpoints. Measures: full computation of one endpoint, regeneration of all 100, p99 of an
 * incremental identity add (≥200 adds, every affected endpoint updated), heap; and growth of
 * the computation with rules × selected identities.
 *
 *   bin/node bench/policy/run.ts            # prints results, writes bench/RESULTS.md `## policy`
 *   bin/node bench/policy/run.ts --no-write # prints only
 */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { CiliumNetworkPolicy } from '../../src/api/types.ts';
import { PolicyEngine } from '../../src/policy/engine.ts';
import { resolve } from '../../src/policy/distillery.ts';
import type { EndpointInfo } from '../../src/policy/resolve-options.ts';
import { podIdentityLabels } from '../../src/identity/labels.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const NS = 'bench';
const SRC = { file: 'bench/policy/run.ts', line: 1, col: 1 };

interface Scenario {
  identities: number;
  rules: number;
  /** identities selected by each rule's peer selector */
  perRule: number;
  endpoints: number;
}

function podLabels(ns: string, labels: Record<string, string>) {
  return podIdentityLabels({ pod: { metadata: { name: 'p', namespace: ns, labels } }, namespace: { metadata: { name: ns, labels: { team: ns } } } });
}

function policies(s: Scenario): CiliumNetworkPolicy[] {
  const out: CiliumNetworkPolicy[] = [];
  for (let r = 0; r < s.rules; r++) {
    const l7 = r % 2 === 1;
    out.push({
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: `rule-${r}`, namespace: NS }, source: { ...SRC, line: r + 1 },
      spec: {
        endpointSelector: { matchLabels: { role: 'server' } },
        ingress: [{
          fromEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'remote', group: `g${r}` } }],
          toPorts: [{
            ports: [{ port: String(l7 ? 8000 + r : 1000 + r), protocol: 'TCP' }],
            ...(l7 ? { rules: { http: [{ method: 'GET', path: `/api/v1/r${r}/.*` }, { method: 'POST', path: `/api/v1/r${r}` }] } } : {}),
          }],
        }],
      },
    });
  }
  return out;
}

interface Built {
  engine: PolicyEngine;
  endpoints: EndpointInfo[];
  importMs: number;
  identitiesMs: number;
}

function build(s: Scenario): Built {
  const engine = new PolicyEngine();
  const t0 = performance.now();
  const endpoints: EndpointInfo[] = [];
  for (let i = 0; i < s.endpoints; i++) {
    const { identity } = engine.allocator.allocateSync(podLabels(NS, { role: 'server', app: `server-${i}` }));
    endpoints.push({ id: i + 1, identity: identity.id, labels: identity.labels });
  }
  // Remote identities: `perRule` per rule's group, the rest in groups no rule selects.
  const remote = s.identities - s.endpoints;
  for (let k = 0; k < remote; k++) {
    const group = k < s.rules * s.perRule ? `g${k % s.rules}` : `other${k % 97}`;
    engine.allocator.allocateSync(podLabels('remote', { group, instance: `i${k}` }));
  }
  const t1 = performance.now();
  engine.applyPolicies(policies(s));
  const t2 = performance.now();
  return { engine, endpoints, importMs: t2 - t1, identitiesMs: t1 - t0 };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
}

function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

function heapMiB(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed / 1048576;
}

const fmt = (n: number, d = 1) => n.toFixed(d);

// ---- the main scenario ---------------------------------------------------------------------

const main: Scenario = { identities: 10_000, rules: 250, perRule: 39, endpoints: 100 };
const heap0 = heapMiB();
const b = build(main);
const { engine, endpoints } = b;
const opts = { repository: engine.repository, options: engine.resolveOptions };

// Full computation for one endpoint (median of 5, cold: resolve without a distillery shares nothing).
const one: number[] = [];
let entries = 0;
for (let i = 0; i < 5; i++) {
  const t = performance.now();
  const ms = resolve(opts, endpoints[i]!);
  one.push(performance.now() - t);
  entries = ms.entries.size;
}

// All 100 endpoints, worst case: nothing shared between endpoints (as if each were selected
// by a different set of rules).
const tc = performance.now();
for (const e of endpoints) resolve(opts, e);
const allCold = performance.now() - tc;

// All 100 endpoints: first computation (new EndpointPolicy each, subscribed; endpoints selected
// by the same rules share one computation), then a forced full regeneration with diffing.
engine.distillery.clear();
const deltasSeen = new Map<number, number>();
const t0 = performance.now();
const eps = endpoints.map((e) => engine.addEndpoint(e, () => deltasSeen.set(e.id, (deltasSeen.get(e.id) ?? 0) + 1)));
const allFirst = performance.now() - t0;
engine.distillery.clear();
const t1 = performance.now();
for (const ep of eps) ep.regenerate();
const allRegen = performance.now() - t1;
const heapAll = heapMiB();

// Incremental identity adds: each selected by one rule ⇒ one new entry in all 100 maps.
const adds: number[] = [];
const ADDS = 300;
for (let k = 0; k < ADDS; k++) {
  deltasSeen.clear();
  const labels = podLabels('remote', { group: `g${k % main.rules}`, instance: `new${k}` });
  const t = performance.now();
  engine.allocator.allocateSync(labels);
  adds.push(performance.now() - t);
  if (deltasSeen.size !== main.endpoints) throw new Error(`identity add reached ${deltasSeen.size} endpoints, want ${main.endpoints}`);
}
// And removals of the same (lane deletes).
const removes: number[] = [];
for (const id of engine.allocator.all().filter((i) => i.labels.toStrings().some((l) => l.startsWith('k8s:instance=new'))).map((i) => i.id)) {
  const t = performance.now();
  engine.allocator.releaseSync(id);
  removes.push(performance.now() - t);
}

// ---- growth with rules × selected identities -------------------------------------------------

interface Point { rules: number; perRule: number; product: number; ms: number; entries: number; usPerEntry: number }
const growth: Point[] = [];
for (const [rules, perRule] of [[62, 40], [125, 40], [250, 20], [250, 40], [500, 40], [250, 80]] as const) {
  const s: Scenario = { identities: Math.max(rules * perRule + 100, 2_000), rules, perRule, endpoints: 1 };
  const g = build(s);
  const o = { repository: g.engine.repository, options: g.engine.resolveOptions };
  const times: number[] = [];
  let n = 0;
  for (let i = 0; i < 9; i++) {
    const t = performance.now();
    n = resolve(o, g.endpoints[0]!).entries.size;
    times.push(performance.now() - t);
  }
  const ms = median(times);
  growth.push({ rules, perRule, product: rules * perRule, ms, entries: n, usPerEntry: (ms * 1000) / n });
}
growth.sort((a, c) => a.product - c.product);

// ---- report --------------------------------------------------------------------------------

const p99 = quantile(adds, 0.99);
const rows: [string, string, string, string][] = [
  ['full computation, one endpoint (median of 5)', `${fmt(median(one))} ms`, '≤ 600 ms', median(one) <= 600 ? 'ok' : 'MISSED'],
  ['all 100 endpoints, each computed cold (no sharing: worst case)', `${fmt(allCold)} ms`, '≤ 3 s', allCold <= 3000 ? 'ok' : 'MISSED'],
  ['all 100 endpoints, first computation (EndpointPolicy, shared per rule set)', `${fmt(allFirst)} ms`, '≤ 3 s', allFirst <= 3000 ? 'ok' : 'MISSED'],
  ['all 100 endpoints, regeneration after a rule change (recompute + diff)', `${fmt(allRegen)} ms`, '≤ 3 s', allRegen <= 3000 ? 'ok' : 'MISSED'],
  [`incremental identity add → 100 maps, p99 of ${ADDS}`, `${fmt(p99, 2)} ms`, '≤ 100 ms', p99 <= 100 ? 'ok' : 'MISSED'],
  ['incremental identity add, p50 / max', `${fmt(median(adds), 2)} / ${fmt(Math.max(...adds), 2)} ms`, '', ''],
  ['identity removal → 100 maps, p99', `${fmt(quantile(removes, 0.99), 2)} ms`, '', ''],
  ['policy import (250 CNPs over 10k identities)', `${fmt(b.importMs)} ms`, '', ''],
  ['map entries per endpoint', String(entries), '≤ 16384', entries <= 16384 ? 'ok' : 'MISSED'],
  ['heap: 10k identities + 250 rules + 100 endpoint maps', `${fmt(heapAll - heap0)} MiB`, '', ''],
];

const lines: string[] = [];
lines.push('## policy', '');
lines.push('Command: `bin/node bench/policy/run.ts`', '');
lines.push(`Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, ${cpus().length} vCPU (${cpus()[0]?.model.trim() ?? 'unknown'}), shared with other work.`, '');
lines.push(`Scenario (goal 9): ${main.identities.toLocaleString('en')} identities, ${main.rules} CNPs (125 L4, 125 L7 HTTP) each selecting all ${main.endpoints} local endpoints and ${main.perRule} remote identities; every endpoint has its own identity.`, '');
lines.push('| measure | result | goal | |', '|---|---|---|---|');
for (const r of rows) lines.push(`| ${r.join(' | ')} |`);
lines.push('', 'Growth of one endpoint\'s full computation with rules × selected identities (cold, median of 9):', '');
lines.push('| rules | identities per rule | rules × selected | map entries | time | µs per entry |', '|---|---|---|---|---|---|');
for (const g of growth) lines.push(`| ${g.rules} | ${g.perRule} | ${g.product.toLocaleString('en')} | ${g.entries.toLocaleString('en')} | ${fmt(g.ms)} ms | ${fmt(g.usPerEntry, 2)} |`);
// Least-squares slope of log(time) against log(rules × selected): 1 is linear.
const xs = growth.map((g) => Math.log(g.product));
const ys = growth.map((g) => Math.log(g.ms));
const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
const my = ys.reduce((a, b) => a + b, 0) / ys.length;
const slope = xs.reduce((a, x, i) => a + (x - mx) * (ys[i]! - my), 0) / xs.reduce((a, x) => a + (x - mx) ** 2, 0);
lines.push('', `Log-log slope of time against rules × selected identities: ${fmt(slope, 2)} (1.00 = linear; ${slope <= 1.15 ? 'no worse than linear' : 'WORSE than linear'}).`, '');
lines.push('An identity add recomputes only that identity\'s lane in each endpoint that selects it; L7 policies hold live selector sets, so they need no update. Endpoints selected by the same rules share one computation per policy revision (as Cilium shares a selector policy per identity); the cold rows show the cost without that.', '');
const report = lines.join('\n');
process.stdout.write(`${report}\n`);

if (!process.argv.includes('--no-write')) {
  const path = new URL('../RESULTS.md', import.meta.url).pathname;
  const prev = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmark results\n';
  // Keep every other section; replace ours (or append it).
  const at = prev.search(/^## /m);
  const preamble = (at < 0 ? prev : prev.slice(0, at)).trimEnd() || '# Benchmark results';
  const others = (at < 0 ? '' : prev.slice(at)).split(/^(?=## )/m).filter((x) => x.trim() && !/^## policy\s*$/m.test(x.split('\n')[0]!));
  const next = [preamble, ...others.map((x) => x.trimEnd()), report.trimEnd()].join('\n\n') + '\n';
  writeFileSync(path, next);
  process.stdout.write(`\nwrote ${path}\n`);
}
