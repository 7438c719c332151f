/**
 * The agent's part of an intercepted keep-alive request, two trees in one process: the records the
 * bench's proxy sends for each request (request and response, HTTP inside intercepted TLS: the
 * feed's tag 4, 50 connections' ports in turn) encoded into frames of 128 before the clock starts,
 * then decoded (wire.ts FrameReader where the tree has it, as the agent; else decode + decodeRecords)
 * and turned into flows (the agent stand-in's path, bench/feed-agent-sink.ts: Hubble's
 * ingestRecord, the http/flow metrics, the ring) with tree A's modules and tree B's, in
 * interleaved rounds (A B, B A, ...). Reports CPU per record per round (process CPU: V8's GC
 * threads included) and, with --alloc, the bytes each side allocates per record (V8's sampling heap
 * profiler with the objects the scavenges and mark-compacts collected; a sample every 256 bytes).
 * In one process the machine's load moves both sides alike; bench/tls/ab.ts's stand-in column is
 * the same work end to end, where its few µs a request sit inside rounds that move by more.
 *
 *   bin/node --max-semi-space-size=16 bench/tls/standin-ab.ts --a /path/to/other/tree [--b .] [--records 200000] [--rounds 10] [--spread 100] [--alloc] [--dns]
 * --spread NS: a response's latency steps by NS per request (100: all within one ms, as the bench's;
 * 1000000: every response's whole ms differs from the last one's).
 * --dns: proxied DNS queries' record pairs instead (a request as tag 0, its answer right after it as
 * tag 3, as the DNS proxy's feed client sends them; fresh records, not lent).
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { Session } from 'node:inspector/promises';
import { loadavg } from 'node:os';
import { median } from '../support.ts';

const { values } = parseArgs({ options: {
  a: { type: 'string' }, b: { type: 'string', default: resolve(import.meta.dirname, '../..') },
  records: { type: 'string', default: '200000' }, rounds: { type: 'string', default: '10' }, spread: { type: 'string', default: '100' }, alloc: { type: 'boolean', default: false }, dns: { type: 'boolean', default: false },
} });
if (!values.a) throw new Error('--a <tree> is required');
const TOTAL = Number(values.records), ROUNDS = Number(values.rounds), SPREAD = Number(values.spread);

interface Tree {
  RecordEncoder: new () => { begin(lost: number): void; push(w: unknown): void; end(): Buffer };
  RecordDecoder: new () => { decode(p: Buffer): { items: unknown[][] } | undefined };
  FRAME_HEADER: number;
  encodeRecord(r: unknown): unknown;
  encodeAnswer(r: unknown, back: number): unknown;
  decodeRecords(items: unknown[], byId: (id: number) => undefined): { records: unknown[] };
  /** the agent's frame path since the records are made straight from the bytes (absent in older trees: decode + decodeRecords) */
  FrameReader?: new () => { read(p: Buffer, byId: (id: number) => undefined, each: (r: unknown) => void): { bad: number } | undefined };
  standInSink(labels: string[]): (r: unknown) => void;
}
async function load(root: string): Promise<Tree> {
  const at = (p: string) => import(pathToFileURL(resolve(root, p)).href);
  const [codec, wire, sink] = await Promise.all([at('src/proxy/feed/record-codec.ts'), at('src/proxy/feed/wire.ts'), at('bench/feed-agent-sink.ts')]);
  return { ...codec, ...wire, ...sink } as Tree;
}
const trees = { A: await load(values.a), B: await load(values.b) };

/** the frames as the proxy's feed client makes them (tree B's encoder: the bytes are the wire's, the same for both) */
function frames(t: Tree): Buffer[] {
  const enc = new t.RecordEncoder();
  const out: Buffer[] = [];
  const client = { id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
  // the bench's origin: reserved:world (never a pod: named by labels, as the proxy's harness resolves it)
  const server = { ip: '127.0.0.1', port: 18944, identity: 2, labels: ['reserved:world'] };
  const t0 = 1.7e12;
  for (let i = 0; i < TOTAL; i += 128) {
    enc.begin(0);
    for (let j = i; j < Math.min(TOTAL, i + 128); j++) {
      const req = j >> 1;
      if (values.dns) { enc.push(j & 1 ? t.encodeAnswer(dnsRecord(req, true), 1) : t.encodeRecord(dnsRecord(req, false))); continue; }
      const base = {
        l7: 'http', direction: 'egress', verdict: 'forwarded', client: { ip: '127.0.0.1', port: 40000 + (req % 50), identity: 1000, endpoint: client }, server, endpointId: 1,
        method: 'GET', url: 'https://api.bench.test/v1/models', host: 'api.bench.test', path: '/v1/models', protocol: 'HTTP/1.1', tls: { sni: 'api.bench.test', intercepted: true },
      };
      const rec = j & 1
        ? { ...base, type: 'response', timeMs: t0 + req * 0.05 + 0.03, headers: ['content-type', 'application/json', 'content-length', '11'], code: 200, latencyNs: 250_000 + (req % 997) * SPREAD, requestTimeMs: t0 + req * 0.05 }
        : { ...base, type: 'request', timeMs: t0 + req * 0.05, headers: ['Host', 'api.bench.test', 'User-Agent', 'wrk'], code: 0, latencyNs: 0 };
      enc.push(t.encodeRecord(rec));
    }
    out.push(enc.end());
  }
  return out;
}
/** the `req`-th query's request or answer record, as the DNS proxy makes them (100 names, 50 client ports in turn) */
function dnsRecord(req: number, answer: boolean): unknown {
  const client = { ip: '10.244.0.5', port: 40000 + (req % 50), identity: 1000, endpoint: { id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] } };
  const r = { l7: 'dns', type: answer ? 'response' : 'request', transport: 'UDP', verdict: 'forwarded', direction: 'egress', timeMs: 1.7e12 + req * 0.05 + (answer ? 0.03 : 0),
    client, server: { ip: '10.96.0.10', port: 53, identity: 2 }, query: `q${req % 100}.bench.lab.`, qtypes: ['A'] };
  return answer ? { ...r, rcode: 0, ips: [`10.0.${(req % 100) >> 8}.${req % 100}`], ttl: 30, cnames: [], rrtypes: ['A'], latencyNs: 250_000 + (req % 997) * SPREAD } : r;
}
const fr = frames(trees.B);

/** one pass over every frame: a new decoder (its string table starts over, as a new connection's), the same sink */
function runner(t: Tree): () => number {
  const sink = t.standInSink(['reserved:world']);
  return () => {
    const dec = new t.RecordDecoder();
    const reader = t.FrameReader ? new t.FrameReader() : undefined;
    let n = 0;
    const each = (rec: unknown) => { sink(rec); n++; };
    for (const f of fr) {
      if (reader) {
        if (!reader.read(f.subarray(t.FRAME_HEADER), () => undefined, each)) throw new Error('a frame did not decode');
        continue;
      }
      const d = dec.decode(f.subarray(t.FRAME_HEADER));
      if (!d) throw new Error('a frame did not decode');
      for (const rec of t.decodeRecords(d.items, () => undefined).records) { sink(rec); n++; }
    }
    return n;
  };
}
const run = { A: runner(trees.A), B: runner(trees.B) };
// warm: optimized code, full rings
for (let i = 0; i < 2; i++) { run.A(); run.B(); }

const startLoad = loadavg().map((l) => l.toFixed(2)).join(' ');
const ns: Record<'A' | 'B', number[]> = { A: [], B: [] };
for (let r = 0; r < ROUNDS; r++) {
  for (const k of (r & 1 ? ['B', 'A'] : ['A', 'B']) as ('A' | 'B')[]) {
    const t = process.cpuUsage();
    const n = run[k]();
    const u = process.cpuUsage(t);
    ns[k].push(((u.user + u.system) * 1000) / n);
  }
}
const bytes: Partial<Record<'A' | 'B', number>> = {};
if (values.alloc) {
  const s = new Session();
  s.connect();
  interface Node { selfSize: number; children: Node[] }
  const sum = (x: Node): number => x.children.reduce((a, c) => a + sum(c), x.selfSize);
  for (const k of ['A', 'B'] as const) {
    await s.post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    const n = run[k]();
    const { profile } = (await s.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: Node } };
    bytes[k] = sum(profile.head) / n;
  }
  s.disconnect();
}
console.log(`A = ${resolve(values.a)}\nB = ${resolve(values.b)}\n${TOTAL} records per pass (${fr.length} frames), ${values.dns ? 'DNS pairs (tags 0 and 3)' : 'intercepted HTTP (tag 4)'}, latency step ${SPREAD} ns; load ${startLoad} at the start, ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the end`);
for (const k of ['A', 'B'] as const) {
  console.log(`${k}: median ${median(ns[k]).toFixed(0)} ns CPU per record (${ns[k].map((x) => x.toFixed(0)).join(' ')})${bytes[k] !== undefined ? `, ${bytes[k]!.toFixed(0)} B allocated per record` : ''}`);
}
console.log(`B lower in ${ns.A.filter((a, i) => ns.B[i]! < a).length} of ${ROUNDS} rounds`);
