// What keeping flows in Hubble's ring costs (issues 18, 11), in process: the agent's datapath
// flows of a TCP_CRR connection (as bench/cluster/agent-events.ts builds them: mb_event records
// -> decodeEvent -> Hubble's ingest with the default --hubble-metrics) with the ring as it is
// ("ring"), with nothing kept ("noring": the flows are built and counted, then dropped), and with
// each slot holding the flow's encoding instead of the Flow ("bytes": toBinary once at push, the
// Flow dropped). Each variant runs in its own process with the agent's V8 flags, interleaved
// round by round; CPU (user+system, GC threads included) per flow from the process, and V8's GC
// pause time per flow (PerformanceObserver 'gc').
// --l7 --feed: the agent stand-in's whole path (bench/feed-agent.ts): the proxy's HTTP records as
// the feed carries them (binary frames of 128, encoded before the clock starts), decoded, turned
// into flows, counted by the http/flow metrics and kept; --close: a new client port per request
// (Connection: close), else 50 connections' ports in turn (keep-alive); --tls: HTTP inside TLS the
// proxy intercepted (https URLs, the record's `tls`: the feed's tag 4), as bench/tls's proxy sends them.
//   bin/node bench/hubble/ring-retention.ts [--events 300000] [--rounds 3] [--l7 [--feed [--close] [--tls]]] [--proxy-flags] [VARIANT ...]
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { takeNumberArg } from '../support.ts';
import { crrEventRecords } from '../cluster/crr-events.ts';
import { AGENT_NODE_FLAGS, PROXY_NODE_FLAGS } from '../../src/lab/names.ts';

const args = process.argv.slice(2);
if (args[0] === '--child') {
  await child(args[1]!, Number(args[2]), args[3] === 'l7', args[4] ?? '');
  process.exit(0);
}
const events = takeNumberArg(args, '--events', 300_000), rounds = takeNumberArg(args, '--rounds', 3);
// --l7: the proxies' HTTP flows (request and response access records through the L7 parser, as
// bench/proxy-harness.ts makes them) instead of the agent's datapath flows
// --proxy-flags: the L7 proxy process's V8 flags (a 4 MiB semi-space) instead of the agent's
const proxyFlags = args.includes('--proxy-flags') ? (args.splice(args.indexOf('--proxy-flags'), 1), true) : false;
const l7 = args.includes('--l7') ? (args.splice(args.indexOf('--l7'), 1), true) : false;
const feed = args.includes('--feed') ? (args.splice(args.indexOf('--feed'), 1), true) : false;
const close = args.includes('--close') ? (args.splice(args.indexOf('--close'), 1), true) : false;
const tls = args.includes('--tls') ? (args.splice(args.indexOf('--tls'), 1), true) : false;
const variants = args.length ? args : ['ring', 'noring', 'bytes'];
const self = fileURLToPath(import.meta.url);
const per = new Map<string, number[]>(variants.map((r) => [r, []]));
console.log(`${l7 ? `L7 (HTTP${tls ? ' inside intercepted TLS' : ''}) flows${feed ? `, through the feed's frames (${close ? 'close' : 'keep-alive'})` : ''}` : 'datapath flows'}; load ${loadavg().map((l) => l.toFixed(1)).join(' ')} at start; ${events} events per run`);
for (let r = 0; r < rounds; r++) {
  for (const v of variants) {
    const out = execFileSync(process.execPath, ['--disable-warning=ExperimentalWarning', ...(proxyFlags ? PROXY_NODE_FLAGS : AGENT_NODE_FLAGS), self, '--child', v, String(events), l7 ? 'l7' : 'dp', feed ? `${close ? 'close' : 'ka'}${tls ? '-tls' : ''}` : ''], { encoding: 'utf8' });
    const [us, gcUs, scav, major, heap, scMed, scP90, scMax] = out.trim().split(' ').map(Number) as [number, number, number, number, number, number, number, number];
    per.get(v)!.push(us);
    console.log(`round ${r + 1} ${v.padEnd(6)}: ${us.toFixed(2)} us CPU per flow, GC pause ${gcUs.toFixed(2)} us per flow (${scav} scavenges: one per ${Math.round(events / Math.max(1, scav))} flows, pause median ${scMed.toFixed(2)} p90 ${scP90.toFixed(2)} max ${scMax.toFixed(2)} ms; ${major} mark-compacts), heap used ${(heap / 1e6).toFixed(1)} MB (load ${loadavg()[0]!.toFixed(1)})`);
  }
}
for (const [v, xs] of per) {
  const s = [...xs].sort((a, b) => a - b);
  console.log(`${v}: median ${s[s.length >> 1]!.toFixed(2)} us per flow (${s[0]!.toFixed(2)}-${s[s.length - 1]!.toFixed(2)})`);
}

/**
 * What `run(n)` costs once warm (50,000 events first: optimized code, a full ring): prints CPU
 * per flow (µs), GC pause per flow (µs), scavenges, mark-compacts and the used heap after.
 */
async function measure(run: (count: number) => number, n: number, after?: () => void): Promise<void> {
  const { PerformanceObserver, constants } = await import('node:perf_hooks');
  run(50_000);
  let gcMs = 0, scav = 0, major = 0;
  const scavMs: number[] = [];
  const obs = new PerformanceObserver((l) => {
    for (const e of l.getEntries()) {
      gcMs += e.duration;
      const k = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
      if (k === constants.NODE_PERFORMANCE_GC_MINOR) { scav++; scavMs.push(e.duration); }
      else if (k === constants.NODE_PERFORMANCE_GC_MAJOR) major++;
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  const t = process.cpuUsage();
  const flows = run(n);
  const u = process.cpuUsage(t);
  await new Promise((r) => setTimeout(r, 50)); // the gc entries are delivered asynchronously
  obs.disconnect();
  after?.();
  const { used_heap_size } = (await import('node:v8')).getHeapStatistics();
  scavMs.sort((a, b) => a - b);
  const q = (f: number) => scavMs.length ? scavMs[Math.min(scavMs.length - 1, Math.floor(f * scavMs.length))]! : 0;
  process.stdout.write(`${(u.user + u.system) / flows} ${(gcMs * 1000) / flows} ${scav} ${major} ${used_heap_size} ${q(0.5)} ${q(0.9)} ${scavMs.at(-1) ?? 0}\n`);
}

async function child(variant: string, n: number, l7: boolean, feedMode: string): Promise<void> {
  if (l7 && feedMode) return childFeed(variant, n, feedMode.startsWith('close'), feedMode.endsWith('-tls'));
  const { toBinary } = await import('@bufbuild/protobuf');
  const { FlowSchema } = await import('../../src/hubble/gen/flow/flow_pb.js');
  const codec = await import('../../src/datapath/linux/codec.ts');
  const { createHubble } = await import('../../src/hubble/index.ts');
  const { createHubbleMetrics } = await import('../../src/hubble/metrics/index.ts');
  const { DEFAULT_HUBBLE_METRICS } = await import('../../src/common/config.ts');
  const { createAgentMetrics } = await import('../../src/agent/metrics.ts');
  const eps = new Map<string, unknown>([
    ['10.244.1.10', { id: 101, identity: 50001, namespace: 'bench', pod: 'cli', labels: ['k8s:app=cli', 'k8s:io.kubernetes.pod.namespace=bench'] }],
    ['10.244.2.10', { id: 0, identity: 50002, namespace: 'bench', pod: 'srv', labels: ['k8s:app=srv', 'k8s:io.kubernetes.pod.namespace=bench'] }],
  ]);
  const resolver = {
    byIp: (ip: string) => eps.get(ip) as never,
    identityLabels: (id: number) => (id === 50001 ? ['k8s:app=cli'] : id === 50002 ? ['k8s:app=srv'] : undefined),
    namesForIp: () => undefined,
    policiesFor: () => undefined,
  };
  const hubble = createHubble({ nodeName: 'node1', resolver, socketPath: '/nonexistent/hubble.sock' } as never);
  const ring = hubble.ring as unknown as { push: (e: unknown) => void; pushFlow: (f: unknown, t: number) => void };
  if (variant === 'noring') ring.pushFlow = () => {};
  if (variant === 'bytes') {
    const slots: (Uint8Array | undefined)[] = new Array(4096);
    const times = new Float64Array(4096);
    let w = 0;
    ring.pushFlow = (f, t) => {
      slots[w & 4095] = toBinary(FlowSchema, f as never);
      times[w & 4095] = t;
      w++;
    };
  }
  const metrics = createHubbleMetrics(DEFAULT_HUBBLE_METRICS, {});
  const agentMetrics = createAgentMetrics({ policies: async () => 0, policyRevision: () => 0, endpoints: () => [], identities: () => [], mapState: () => undefined, pinRoot: '/nonexistent' });
  hubble.onFlow((f) => metrics.process(f));
  const records = crrEventRecords(codec.encodeEvent);
  let flows = 0;
  if (l7) return childL7(variant, n);
  const run = (count: number) => {
    for (let i = 0; i < count; i++) {
      const ev = codec.decodeEvent(records[i % records.length]!, 8, 0n);
      const f = hubble.ingest(ev);
      if (f) {
        flows++;
        agentMetrics.observe(f, ev.length);
      }
    }
  };
  await measure((count) => { flows = 0; run(count); return flows; }, n, () => {
    if (process.env.DEBUG_RR) console.error({ flows, ringWritten: (hubble.ring as { written: number }).written });
  });
}

async function childL7(variant: string, n: number): Promise<void> {
  const { toBinary } = await import('@bufbuild/protobuf');
  const { FlowSchema } = await import('../../src/hubble/gen/flow/flow_pb.js');
  const { createL7Parser } = await import('../../src/hubble/l7-parser.ts');
  const { FlowRing } = await import('../../src/hubble/ring.ts');
  const { createHubbleMetrics } = await import('../../src/hubble/metrics/index.ts');
  await import('../../src/hubble/metrics/http.ts');
  const client = { id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
  const build = createL7Parser({ nodeName: 'bench', resolver: { byIp: () => client, identityLabels: () => ['k8s:app=origin'] } as never });
  const ring = new FlowRing(4095);
  const metrics = createHubbleMetrics('http flow');
  let sink: (f: never, t: number) => void = (f, t) => { metrics.process(f); ring.pushFlow(f, t); };
  if (variant === 'noring') sink = (f) => { metrics.process(f); };
  if (variant === 'bytes') {
    const slots: (Uint8Array | undefined)[] = new Array(4096);
    const times = new Float64Array(4096);
    let w = 0;
    sink = (f, t) => {
      metrics.process(f);
      slots[w & 4095] = toBinary(FlowSchema, f);
      times[w & 4095] = t;
      w++;
    };
  }
  const peer = (ip: string, port: number, identity: number) => ({ ip, port, identity });
  const base = { l7: 'http', direction: 'egress', verdict: 'forwarded', client: peer('10.244.1.10', 40000, 1000), server: peer('10.244.2.10', 8080, 2000), endpointId: 1, method: 'GET', url: 'http://origin:8080/api/v1/items?id=7', host: 'origin:8080', path: '/api/v1/items', protocol: 'HTTP/1.1' };
  const req = { ...base, type: 'request', headers: ['host', 'origin:8080', 'user-agent', 'wrk', 'accept', '*/*'], code: 0, latencyNs: 0 };
  const resp = { ...base, type: 'response', headers: ['content-type', 'text/plain', 'content-length', '1024'], code: 200, latencyNs: 250_000 };
  let flows = 0;
  const run = (count: number) => {
    for (let i = 0; i < count; i++) {
      const t = 1.7e12 + i;
      const f = build({ ...(i & 1 ? resp : req), timeMs: t } as never);
      sink(f as never, t);
      flows++;
    }
  };
  await measure((count) => { flows = 0; run(count); return flows; }, n);
}

/**
 * The agent stand-in's path (bench/feed-agent.ts) from the feed's frames: the records a proxied
 * request makes (request and response, wrk's and the origin's headers), encoded as the proxy's
 * feed client does (frames of 128 records, one string table per connection) before the clock
 * starts; measured: decoding, the flows, the metrics and the ring (variant `ring`; `noring`: the
 * flows are not kept).
 */
async function childFeed(variant: string, n: number, close: boolean, tls: boolean): Promise<void> {
  const { RecordEncoder, FRAME_HEADER } = await import('../../src/proxy/feed/record-codec.ts');
  const { encodeRecord, FrameReader } = await import('../../src/proxy/feed/wire.ts');
  const { standInSink } = await import('../feed-agent-sink.ts');
  const sink = standInSink(['k8s:app=server'], variant === 'noring');
  const total = n + 50_000;
  const enc = new RecordEncoder();
  const frames: Buffer[] = [];
  const client = { id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
  const server = { ip: '127.0.0.1', port: 18180, identity: 2000 };
  const t0 = 1.7e12;
  for (let i = 0; i < total; i += 128) {
    enc.begin(0);
    for (let j = i; j < Math.min(total, i + 128); j++) {
      const req = j >> 1;
      const port = close ? 20000 + (req % 40000) : 40000 + (req % 50);
      const base = {
        l7: 'http', direction: 'egress', verdict: 'forwarded', client: { ip: '127.0.0.1', port, identity: 1000, endpoint: client }, server, endpointId: 1,
        method: 'GET', url: `${tls ? 'https' : 'http'}://127.0.0.1:18182/api/v1/resource99`, host: '127.0.0.1:18182', path: '/api/v1/resource99', protocol: 'HTTP/1.1',
        ...(tls ? { tls: { sni: 'api.bench.test', intercepted: true } } : {}),
      };
      const rec = j & 1
        ? { ...base, type: 'response', timeMs: t0 + req * 0.05 + 0.03, headers: ['content-length', '2', 'content-type', 'text/plain', 'cache-control', 'no-cache'], code: 200, latencyNs: 250_000 + (req % 997) * 100, requestTimeMs: t0 + req * 0.05 }
        : { ...base, type: 'request', timeMs: t0 + req * 0.05, headers: ['Host', '127.0.0.1:18182'], code: 0, latencyNs: 0 };
      enc.push(encodeRecord(rec as never));
    }
    frames.push(enc.end());
  }
  // as the agent (src/agent/proxy-feed.ts frameRecords): records straight from the frames
  const reader = new FrameReader();
  // as bench/feed-agent.ts: no endpoint by id, the resolver's by address
  const byId = () => undefined;
  let next = 0;
  const run = (count: number) => {
    let done = 0;
    const each = (rec: Parameters<typeof sink>[0]) => { sink(rec); done++; };
    while (done < count && next < frames.length) {
      const f = frames[next++]!;
      if (!reader.read(f.subarray(FRAME_HEADER), byId, each)) throw new Error('a frame did not decode');
    }
    return done;
  };
  await measure(run, n);
}
