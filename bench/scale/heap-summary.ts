// A V8 heap snapshot summed by node type and constructor name (self sizes): where an agent's heap
// goes, counted per structure. bin/node bench/scale/heap-summary.ts FILE [top N]
import { readFileSync } from 'node:fs';
const snap = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as { snapshot: { meta: { node_fields: string[]; node_types: [string[]] } }; nodes: number[]; strings: string[] };
const f = snap.snapshot.meta.node_fields;
const types = snap.snapshot.meta.node_types[0];
const [T, N, S] = [f.indexOf('type'), f.indexOf('name'), f.indexOf('self_size')];
const by = new Map<string, { count: number; bytes: number }>();
for (let i = 0; i < snap.nodes.length; i += f.length) {
  const type = types[snap.nodes[i + T]!]!;
  const name = type === 'object' || type === 'native' || type === 'closure' ? `${type}:${snap.strings[snap.nodes[i + N]!]}` : type;
  const e = by.get(name) ?? { count: 0, bytes: 0 };
  e.count++; e.bytes += snap.nodes[i + S]!;
  by.set(name, e);
}
const top = [...by].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, Number(process.argv[3] ?? 25));
for (const [name, e] of top) console.log(`${(e.bytes / 2 ** 20).toFixed(1).padStart(7)} MiB ${String(e.count).padStart(9)}  ${name.slice(0, 80)}`);
