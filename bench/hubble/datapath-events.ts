// The agent's CPU per datapath event, in process, through its very path: mb_event records of a
// cross-node TCP_CRR connection (bench/cluster/crr-events.ts: policy verdict, SYN, SYN-ACK, ACK,
// RST; the client local, the server a pod on another node) -> decodeEvent -> the subscriber
// compose.ts wires (Hubble's ingest: flow, ring; the agent's drop/forward counters) -> Hubble's
// onFlow subscribers (the default --hubble-metrics). Flows are named by the agent's resolver
// (src/agent/flow-resolver.ts) over what a cluster agent holds: its endpoint table (30 local pods),
// the cluster's remote store (3,000 pods on other nodes, src/agent/remote-store.ts), identities
// whose labels the policy engine makes per lookup, an FQDN cache with names for other addresses.
//
// Paced (the default), as the agent's ring consumer takes them: `--rate` events a second, in
// batches every 50 ms (src/sys/ring.ts COALESCE_MS), for `--secs` after 2 s of warm-up; CPU
// (user+system of the process: V8's GC threads included) per event, and V8's GC pauses.
// --tight: one loop of `--events` instead (no pauses, hot caches; as bench/cluster/agent-events.ts), and
// the bytes an event allocates (new space's growth over batches of 1,000 events between scavenges).
// Each root (a checkout: main's worktree beside a branch's) runs in its own process with the
// agent's V8 flags, interleaved round by round. A root without src/agent/flow-resolver.ts (main
// before it) gets the resolver compose.ts had inline, copied below.
//   bin/node bench/hubble/datapath-events.ts [--rate 10000] [--secs 5] [--rounds 3] [--tight [--events 300000]] [ROOT ...]
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { takeNumberArg } from '../support.ts';
import { crrEventRecords } from '../cluster/crr-events.ts';
import { AGENT_NODE_FLAGS } from '../../src/lab/names.ts';

const args = process.argv.slice(2);
if (args[0] === '--child') {
  await child(args[1]!, args[2] === 'tight', Number(args[3]), Number(args[4]));
  process.exit(0);
}
const rate = takeNumberArg(args, '--rate', 10_000), secs = takeNumberArg(args, '--secs', 5);
const events = takeNumberArg(args, '--events', 300_000), rounds = takeNumberArg(args, '--rounds', 3);
const tight = args.includes('--tight') ? (args.splice(args.indexOf('--tight'), 1), true) : false;
const roots = args.length ? args : [fileURLToPath(new URL('../../', import.meta.url))];
const self = fileURLToPath(import.meta.url);
const per = new Map<string, number[]>(roots.map((r) => [r, []]));
console.log(`${tight ? `tight loop, ${events} events` : `paced: ${rate} events/s in batches every 50 ms, ${secs} s`} per run; load ${loadavg().map((l) => l.toFixed(1)).join(' ')} at start`);
for (let r = 0; r < rounds; r++) {
  for (const root of roots) {
    const out = execFileSync(process.execPath, ['--disable-warning=ExperimentalWarning', ...AGENT_NODE_FLAGS, self, '--child', root, tight ? 'tight' : 'paced', String(tight ? events : rate), String(secs)], { encoding: 'utf8' });
    const [us, gcUs, scav, major, heap, n, alloc] = out.trim().split(' ').map(Number) as [number, number, number, number, number, number, number];
    per.get(root)!.push(us);
    console.log(`round ${r + 1} ${root}: ${us.toFixed(2)} us CPU per event, GC pause ${gcUs.toFixed(2)} us per event (${scav} scavenges, ${major} mark-compacts), ${n} events, heap used ${(heap / 1e6).toFixed(1)} MB${Number.isNaN(alloc) ? '' : `, ${alloc.toFixed(0)} bytes allocated per event`} (load ${loadavg()[0]!.toFixed(1)})`);
  }
}
for (const [root, v] of per) {
  const s = [...v].sort((a, b) => a - b);
  console.log(`${root}: median ${s[s.length >> 1]!.toFixed(2)} us per event (${s[0]!.toFixed(2)}-${s[s.length - 1]!.toFixed(2)})`);
}

interface Ep { id: number; identity: number; namespace: string; pod: string; labels: string[]; ip: string; workload?: { kind: string; name: string } }

async function child(root: string, isTight: boolean, n: number, seconds: number): Promise<void> {
  const { PerformanceObserver, constants } = await import('node:perf_hooks');
  const codec = await import(`${root}/src/datapath/linux/codec.ts`);
  const { createHubble } = await import(`${root}/src/hubble/index.ts`);
  const { createHubbleMetrics } = await import(`${root}/src/hubble/metrics/index.ts`);
  const { DEFAULT_HUBBLE_METRICS } = await import(`${root}/src/common/config.ts`);
  const { createAgentMetrics } = await import(`${root}/src/agent/metrics.ts`);
  const { RemoteStore } = await import(`${root}/src/agent/remote-store.ts`);
  const { NodeDNSCache } = await import(`${root}/src/fqdn/cache.ts`);
  const { createPolicyCorrelation } = await import(`${root}/src/hubble/correlation.ts`);

  // what a cluster agent holds: its pods, the cluster's, identities, DNS names
  const locals = new Map<string, Ep>();
  for (let i = 0; i < 30; i++) {
    const ip = `10.244.1.${10 + i}`;
    locals.set(ip, { id: 101 + i, identity: 50001 + (i % 10), namespace: 'bench', pod: i ? `p${i}` : 'cli', labels: [`k8s:app=${i ? `a${i % 10}` : 'cli'}`, 'k8s:io.kubernetes.pod.namespace=bench'], ip, workload: { kind: 'Deployment', name: `a${i % 10}` } });
  }
  const remote = new RemoteStore();
  for (let i = 0; i < 3000; i++) {
    const ip = `10.244.${2 + (i >> 8)}.${i & 255}`;
    remote.set({ ip, identity: i === 10 ? 50002 : 50100 + (i % 200), hostIp: `192.0.2.${2 + (i >> 8)}`, node: `node${2 + (i >> 8)}`, namespace: 'bench', pod: i === 10 ? 'srv' : `r${i}` });
  }
  // as the policy engine: an identity's labels made as strings per lookup (labelsOf(id).toStrings())
  const identityLabels = (id: number) => (id >= 50000 && id < 51000 ? [`k8s:app=${id === 50002 ? 'srv' : `a${id % 10}`}`, 'k8s:io.kubernetes.pod.namespace=bench', 'k8s:io.cilium.k8s.policy.cluster=default'] : undefined);
  const dnsCache = new NodeDNSCache({});
  for (let i = 0; i < 50; i++) dnsCache.update(101, `svc${i}.example.com.`, [`198.51.100.${i}`], 3600);
  const names = { has: (ip: string) => dnsCache.hasIP(ip), names: (ip: string) => dnsCache.namesForIP(ip).map((x: string) => (x.endsWith('.') ? x.slice(0, -1) : x)) };
  const deps = { localByIp: (ip: string) => locals.get(ip), remoteEndpoint: remote.peek ? (ip: string) => remote.peek(ip) : (ip: string) => remote.get(ip), identityLabels, mapState: () => undefined, revision: () => 1 };
  let resolver: Record<string, unknown>;
  if (existsSync(`${root}/src/agent/flow-resolver.ts`)) {
    const { createFlowResolver } = await import(`${root}/src/agent/flow-resolver.ts`);
    resolver = createFlowResolver(deps);
    (resolver as { setNames(n: unknown): void }).setNames(names);
  } else {
    resolver = mainResolver(deps, createPolicyCorrelation);
    // compose.ts before: dns.namesForIp for every address
    resolver.namesForIp = (ip: string) => names.names(ip);
  }

  const hubble = createHubble({ nodeName: 'node1', resolver, socketPath: '/nonexistent/hubble.sock' });
  const metrics = createHubbleMetrics(DEFAULT_HUBBLE_METRICS, {});
  const agentMetrics = createAgentMetrics({ policies: async () => 0, policyRevision: () => 0, endpoints: () => [], identities: () => [], mapState: () => undefined, pinRoot: '/nonexistent' });
  // as compose.ts: the metrics subscriber borrows the flow, and the event path ingests borrowed, where the root has it
  hubble.onFlow((f: { eventType?: { type: number } }) => { metrics.process(f); if (f.eventType?.type === 129) agentMetrics.observe(f); }, { borrows: true });
  const ingest = hubble.ingestBorrowed ? (ev: unknown) => hubble.ingestBorrowed(ev) : (ev: unknown) => hubble.ingest(ev);
  const records = crrEventRecords(codec.encodeEvent);
  let next = 0;
  // as the ring consumer decodes: into one reused event where the root has it (events.ts), else an event per record
  const view = codec.DecodedEvent ? new codec.DecodedEvent() : undefined;
  const decode = view ? (b: Buffer) => codec.decodeEventInto(view, b, 8, 0n) : (b: Buffer) => codec.decodeEvent(b, 8, 0n);
  const feed = (count: number) => {
    for (let i = 0; i < count; i++) {
      const ev = decode(records[next++ % records.length]!);
      const f = ingest(ev);
      if (f) agentMetrics.observe(f, ev.length);
    }
  };

  let gcMs = 0, scav = 0, major = 0;
  const obs = new PerformanceObserver((l) => {
    for (const e of l.getEntries()) {
      gcMs += e.duration;
      const k = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
      if (k === constants.NODE_PERFORMANCE_GC_MINOR) scav++;
      else if (k === constants.NODE_PERFORMANCE_GC_MAJOR) major++;
    }
  });
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  let count = 0, allocated = NaN;
  let u: NodeJS.CpuUsage;
  if (isTight) {
    feed(50_000); // warm: optimized code, a full Hubble ring
    // bytes allocated per event: new space's growth over batches of 1,000 that no scavenge emptied
    const { getHeapSpaceStatistics } = await import('node:v8');
    const young = () => getHeapSpaceStatistics().find((x) => x.space_name === 'new_space')!.space_used_size;
    const per: number[] = [];
    for (let i = 0; i < 40 && per.length < 15; i++) {
      const a = young();
      feed(1000);
      const b = young();
      if (b >= a) per.push((b - a) / 1000);
    }
    per.sort((x, y) => x - y);
    allocated = per.length ? per[per.length >> 1]! : NaN;
    obs.observe({ entryTypes: ['gc'] });
    const t = process.cpuUsage();
    feed(n);
    u = process.cpuUsage(t);
    count = n;
  } else {
    const batch = Math.max(1, Math.round(n / 20));
    const paced = async (ms: number) => {
      const end = performance.now() + ms;
      let done = 0;
      for (let t = performance.now(); t < end; t += 50) {
        feed(batch);
        done += batch;
        await sleep(Math.max(0, t + 50 - performance.now()));
      }
      return done;
    };
    await paced(2000);
    obs.observe({ entryTypes: ['gc'] });
    const t = process.cpuUsage();
    count = await paced(seconds * 1000);
    u = process.cpuUsage(t);
  }
  await sleep(50); // the gc entries are delivered asynchronously
  obs.disconnect();
  const { used_heap_size } = (await import('node:v8')).getHeapStatistics();
  process.stdout.write(`${(u.user + u.system) / count} ${(gcMs * 1000) / count} ${scav} ${major} ${used_heap_size} ${count} ${allocated}\n`);
}

/** The resolver compose.ts had inline before src/agent/flow-resolver.ts (main 7ec1567), for a root without that file. */
function mainResolver(
  deps: { localByIp(ip: string): Ep | undefined; remoteEndpoint(ip: string): { identity: number; namespace?: string; pod?: string } | undefined; identityLabels(id: number): string[] | undefined; mapState(id: number): undefined; revision(): number },
  createPolicyCorrelation: (d: { mapState(id: number): undefined; revision(): number }) => unknown,
): Record<string, unknown> {
  const resolvedViews = new WeakMap<Ep, object>();
  const resolved = (ep: Ep) => {
    let r = resolvedViews.get(ep);
    if (!r) {
      r = { id: ep.id, identity: ep.identity, namespace: ep.namespace, pod: ep.pod, labels: ep.labels, ...(ep.workload ? { workloads: [ep.workload] } : {}) };
      resolvedViews.set(ep, r);
    }
    return r;
  };
  const remoteViews = new Map<string, { identity: number; namespace: string; pod: string }>();
  return {
    byIp(ip: string) {
      const ep = deps.localByIp(ip);
      if (ep) return resolved(ep);
      const r = deps.remoteEndpoint(ip);
      if (!r?.namespace || !r.pod) return undefined;
      const had = remoteViews.get(ip);
      if (had && had.identity === r.identity && had.namespace === r.namespace && had.pod === r.pod) return had;
      const labels = deps.identityLabels(r.identity);
      const v = { id: 0, identity: r.identity, namespace: r.namespace, pod: r.pod, labels: labels ?? [] };
      if (labels) {
        if (remoteViews.size >= 65536) remoteViews.clear();
        remoteViews.set(ip, v);
      }
      return v;
    },
    identityLabels: (id: number) => deps.identityLabels(id),
    policiesFor: createPolicyCorrelation({ mapState: (id) => deps.mapState(id), revision: () => deps.revision() }),
  };
}
