/**
 * What one proxied DNS query costs the agent after the packet path: its two access records (query,
 * answer) through the agent's sink as src/agent/compose.ts wires it — Hubble's L7 parser,
 * hubble.ingestRecord (the L7 parser, uuid, workloads, ring), the default Hubble metrics and cilium_policy_l7_total.
 * No sockets: CPU time per query of this process (process.cpuUsage, GC included), so two builds
 * compare on a shared machine. Records are built as the proxy builds them (a new object each).
 *
 *   bin/node bench/dns/records.ts [--queries 300000] [--rounds 5] [--wire]
 *
 * --wire: the agent's whole path from the feed (src/agent/proxy-feed.ts frameRecords): the records
 * are encoded first as the proxy process's feed client does (frames of 64, an answer after its
 * request as tag 3), untimed; timed is the agent's FrameReader and ingestRecord.
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHubble } from '../../src/hubble/index.ts';
import { createHubbleMetrics, DEFAULT_METRICS } from '../../src/hubble/metrics/index.ts';
import { createAgentMetrics } from '../../src/agent/metrics.ts';
import type { AccessLogRecord, AccessPeer, DnsAccessRecord } from '../../src/common/access-log.ts';
import { RecordEncoder } from '../../src/proxy/feed/record-codec.ts';
import { encodeAnswer, FrameReader, pushRecord } from '../../src/proxy/feed/wire.ts';

const { values } = parseArgs({ options: { queries: { type: 'string', default: '300000' }, rounds: { type: 'string', default: '5' }, wire: { type: 'boolean', default: false } } });
const N = Number(values.queries), ROUNDS = Number(values.rounds);
const dir = mkdtempSync(join(tmpdir(), 'bench-dnsrec-'));
const EP = { id: 7, identity: 300, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
const DNS_EP = { id: 9, identity: 400, namespace: 'kube-system', pod: 'dns', labels: ['k8s:k8s-app=kube-dns'] };
const epAt = (ip: string) => (ip === '10.244.0.5' ? EP : ip === '10.244.0.9' ? DNS_EP : undefined);
const hubble = createHubble({ nodeName: 'bench', resolver: { byIp: epAt, identityLabels: () => undefined }, socketPath: join(dir, 'hubble.sock') });
const metrics = createHubbleMetrics(DEFAULT_METRICS);
const agentMetrics = createAgentMetrics({ policies: async () => 0, policyRevision: () => 0, endpoints: () => [], identities: () => [], mapState: () => undefined, pinRoot: dir });
// borrows, as compose.ts subscribes (the metrics read a flow during the call only)
hubble.onFlow((f) => { metrics.process(f); if (f.eventType?.type === 129) agentMetrics.observe(f); }, { borrows: true });
// the agent's path (src/agent/compose.ts): Hubble's ingestRecord
const sink = (rec: AccessLogRecord) => hubble.ingestRecord(rec);

const NAMES = Array.from({ length: 100 }, (_, i) => `q${i}.bench.lab.`);
const peer = (ip: string, port: number): AccessPeer => ({ ip, port, identity: epAt(ip)!.identity, endpoint: epAt(ip)! });
function query(i: number): [DnsAccessRecord, DnsAccessRecord] {
  const client = peer('10.244.0.5', 30000 + (i & 1023)), server = peer('10.244.0.9', 53);
  const query = NAMES[i % 100]!;
  return [
    { l7: 'dns', direction: 'egress', timeMs: Date.now(), type: 'request', client, server, transport: 'UDP', query, qtypes: ['A'], verdict: 'forwarded' },
    {
      l7: 'dns', direction: 'egress', timeMs: Date.now(), type: 'response', client, server, transport: 'UDP', query, qtypes: ['A'], verdict: 'forwarded',
      rcode: 0, ips: ['198.51.100.77'], ttl: 300, cnames: [], rrtypes: ['A'], latencyNs: 50_000,
    },
  ];
}
/** one connection's encoder and decoder (the string table lives as long as both) */
const enc = new RecordEncoder(), reader = new FrameReader();
const byId = (id: number) => (id === EP.id ? EP : id === DNS_EP.id ? DNS_EP : undefined);
/** n queries' records as the feed client frames them: 32 queries (64 records) a frame */
function frames(n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i += 32) {
    enc.begin(0);
    for (let k = i; k < Math.min(n, i + 32); k++) {
      const [q, a] = query(k);
      pushRecord(enc, q);
      enc.push(encodeAnswer(a, 1));
    }
    out.push(enc.end().subarray(5));
  }
  return out;
}
function run(n: number, wire?: Buffer[]): void {
  if (wire) {
    for (const f of wire) {
      if (!reader.read(f, byId, sink)) throw new Error('a frame did not decode');
    }
    return;
  }
  for (let i = 0; i < n; i++) {
    const [q, a] = query(i);
    sink(q);
    sink(a);
  }
}
try {
  run(50_000, values.wire ? frames(50_000) : undefined); // warm-up (JIT, series created)
  const us: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const wire = values.wire ? frames(N) : undefined;
    const c0 = process.cpuUsage();
    run(N, wire);
    const c = process.cpuUsage(c0);
    us.push((c.user + c.system) / N);
  }
  us.sort((a, b) => a - b);
  console.log(`records${values.wire ? ' (from the feed\'s frames)' : ''}: CPU per query (2 records) min ${us[0]!.toFixed(2)} / median ${us[Math.floor(us.length / 2)]!.toFixed(2)} / max ${us.at(-1)!.toFixed(2)} µs over ${ROUNDS} × ${N} queries; flows seen ${hubble.stats().seenFlows}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
