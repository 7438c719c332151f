/**
 * What a process kept between two of its V8 heap snapshots (`node --heapsnapshot-signal=SIGUSR2`,
 * or v8.writeHeapSnapshot()): objects by constructor (Chrome's summary groups: an object's
 * constructor name, `(closure)`, `(string)`, `(array)`, `(compiled code)`, …), their counts and
 * self sizes in each, and the objects of the second that the first did not have (a snapshot's
 * object ids are stable within one process, so a new id is an object made since and still live
 * at the second snapshot's full GC), with what holds them (the retaining object's group and the
 * edge's name). A leak shows as a group whose new objects grow with the time between snapshots.
 *
 *   bin/node bench/heap-diff.ts A.heapsnapshot B.heapsnapshot [--top 25]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
if (positionals.length !== 2) throw new Error('usage: heap-diff.ts A.heapsnapshot B.heapsnapshot [--top N]');
const TOP = Number(values.top);

interface Snap {
  /** per node: its group's index in `groups`, self size, id */
  group: Int32Array;
  self: Float64Array;
  id: Float64Array;
  groups: string[];
  /** per node: retainers as (node index, edge name) pairs, built on demand */
  firstEdge: Int32Array;
  edges: Int32Array;
  edgeFields: number;
  edgeTypes: string[];
  strings: string[];
  nodeFields: number;
  total: number;
}

function load(file: string): Snap {
  const j = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
    nodes: number[]; edges: number[]; strings: string[];
  };
  const meta = j.snapshot.meta;
  const nf = meta.node_fields.length;
  const [ti, ni, ii, si, ei] = ['type', 'name', 'id', 'self_size', 'edge_count'].map((f) => meta.node_fields.indexOf(f)) as [number, number, number, number, number];
  const types = meta.node_types[0];
  const n = j.nodes.length / nf;
  const group = new Int32Array(n), self = new Float64Array(n), id = new Float64Array(n), firstEdge = new Int32Array(n + 1);
  const groups: string[] = [];
  const byName = new Map<string, number>();
  let e = 0, total = 0;
  for (let i = 0; i < n; i++) {
    const b = i * nf;
    const type = types[j.nodes[b + ti]!]!;
    const name = j.strings[j.nodes[b + ni]!]!;
    const g = type === 'object' || type === 'native' ? name : type === 'closure' ? '(closure)' : type === 'string' || type === 'concatenated string' || type === 'sliced string' ? '(string)'
      : type === 'array' ? `(array) ${name}` : type === 'code' ? `(code) ${name.slice(0, 40)}` : type === 'hidden' ? `(hidden) ${name.slice(0, 40)}` : `(${type})`;
    let gi = byName.get(g);
    if (gi === undefined) { gi = groups.length; groups.push(g); byName.set(g, gi); }
    group[i] = gi;
    self[i] = j.nodes[b + si]!;
    total += self[i]!;
    id[i] = j.nodes[b + ii]!;
    firstEdge[i] = e;
    e += j.nodes[b + ei]!;
  }
  firstEdge[n] = e;
  return { group, self, id, groups, firstEdge, edges: Int32Array.from(j.edges), edgeFields: meta.edge_fields.length, edgeTypes: meta.edge_types[0], strings: j.strings, nodeFields: nf, total };
}

const [a, b] = positionals.map(load) as [Snap, Snap];
const sum = (s: Snap, only?: (i: number) => boolean) => {
  const m = new Map<string, { n: number; bytes: number }>();
  for (let i = 0; i < s.group.length; i++) {
    if (only && !only(i)) continue;
    const g = s.groups[s.group[i]!]!;
    const x = m.get(g) ?? { n: 0, bytes: 0 };
    x.n++; x.bytes += s.self[i]!;
    m.set(g, x);
  }
  return m;
};
const sa = sum(a), sb = sum(b);
console.log(`A: ${a.group.length} objects, ${(a.total / 1048576).toFixed(2)} MB self; B: ${b.group.length} objects, ${(b.total / 1048576).toFixed(2)} MB self`);
console.log(`\nlargest changes by group (B - A):`);
const rows = [...new Set([...sa.keys(), ...sb.keys()])].map((g) => {
  const x = sa.get(g) ?? { n: 0, bytes: 0 }, y = sb.get(g) ?? { n: 0, bytes: 0 };
  return { g, dn: y.n - x.n, db: y.bytes - x.bytes, n: y.n, bytes: y.bytes };
}).sort((p, q) => Math.abs(q.db) - Math.abs(p.db));
for (const r of rows.slice(0, TOP)) console.log(`${String(r.dn).padStart(8)} objects ${String(r.db).padStart(10)} B   (B: ${r.n} objects, ${r.bytes} B)  ${r.g}`);

// the objects of B that A did not have, by group, and what retains them
const idsA = new Set<number>();
for (let i = 0; i < a.id.length; i++) idsA.add(a.id[i]!);
const isNew = (i: number) => !idsA.has(b.id[i]!);
const nb = [...sum(b, isNew)].sort((p, q) => q[1].bytes - p[1].bytes);
let newBytes = 0, newN = 0;
for (const [, x] of nb) { newBytes += x.bytes; newN += x.n; }
console.log(`\nobjects in B made since A and still live: ${newN}, ${newBytes} B; by group:`);
for (const [g, x] of nb.slice(0, TOP)) console.log(`${String(x.n).padStart(8)} objects ${String(x.bytes).padStart(10)} B  ${g}`);

// retainers of the new objects of the largest groups (an edge's target is a node index × node fields)
const ef = b.edgeFields, toField = 2, typeField = 0, nameField = 1;
const retainers = new Map<number, string[]>();
const want = new Set(nb.slice(0, 8).map(([g]) => g));
for (let i = 0; i < b.group.length; i++) {
  for (let e = b.firstEdge[i]!; e < b.firstEdge[i + 1]!; e++) {
    const t = b.edges[e * ef + toField]! / b.nodeFields;
    if (!isNew(t) || !want.has(b.groups[b.group[t]!]!)) continue;
    const et = b.edgeTypes[b.edges[e * ef + typeField]!]!;
    if (et === 'weak') continue;
    const nm = et === 'element' || et === 'hidden' ? `[${et}]` : b.strings[b.edges[e * ef + nameField]!]!;
    const k = b.groups[b.group[t]!]!;
    const list = retainers.get(t) ?? [];
    list.push(`${b.groups[b.group[i]!]} .${nm}${isNew(i) ? ' (new)' : ''}`);
    retainers.set(t, list);
    void k;
  }
}
const byGroupRet = new Map<string, Map<string, number>>();
for (const [t, list] of retainers) {
  const g = b.groups[b.group[t]!]!;
  const m = byGroupRet.get(g) ?? new Map<string, number>();
  for (const r of new Set(list)) m.set(r, (m.get(r) ?? 0) + 1);
  byGroupRet.set(g, m);
}
console.log(`\nwhat holds the new objects of the largest groups (retainer group .edge: how many):`);
for (const [g] of nb.slice(0, 8)) {
  const m = byGroupRet.get(g);
  if (!m) continue;
  console.log(`  ${g}`);
  for (const [r, c] of [...m].sort((p, q) => q[1] - p[1]).slice(0, 6)) console.log(`    ${String(c).padStart(8)}  ${r}`);
}
