/**
 * The membrane HTTP proxy as the http and tls benchmarks run it: the production connection code
 * with a fixed L7 policy, every access record turned into a Hubble flow that feeds the http/flow
 * metrics and a flow ring, as in the agent, forwarding to a fixed origin. By default the proxy runs
 * as the lab runs it, in its own process (the flows made by an agent stand-in it starts);
 * MEMBRANE_BENCH_FEED=0 makes the flows in the proxy's process, as the in-agent proxy.
 */
import { createHttpProxy, type HttpFilterChain } from '../src/proxy/http/proxy.ts';
import { standInSink } from './feed-agent-sink.ts';
import type { L7Policy } from '../src/policy/types.ts';
import type { AccessLogRecord } from '../src/common/access-log.ts';
import { createFeedClient } from '../src/proxy/feed/client.ts';
import { benchAgentNodeFlags, benchOwnProcess } from './support.ts';
import { sampleMemory } from './mem-sample.ts';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BenchProxyOptions {
  port: number;
  origin: number;
  policy: L7Policy;
  /** identity and labels of the remote peer (the origin) */
  remote: { identity: number; labels: string[] };
  /**
   * extra network filters; `emit` takes their access records as the production proxy's do: over
   * the feed to the agent stand-in (the proxy in its own process) or into a flow in this process
   */
  configure?(chain: HttpFilterChain, emit: (rec: AccessLogRecord) => void): void;
}

export async function startBenchProxy(o: BenchProxyOptions): Promise<void> {
  // the flows in this process (MEMBRANE_BENCH_FEED=0), as the agent stand-in makes them (feed-agent-sink.ts);
  // MEMBRANE_BENCH_FLOWS=noring: flows made and counted by the metrics but not kept in the ring
  // (what keeping them costs: each flow lives through scavenges while the ring holds it)
  const sink = benchOwnProcess() ? () => {} : standInSink(o.remote.labels, process.env.MEMBRANE_BENCH_FLOWS === 'noring');
  // the proxy as its own process (--external-envoy-proxy, the lab default; MEMBRANE_BENCH_FEED=0:
  // inside the agent, the sink above): records go over the feed socket to an agent stand-in
  // (bench/feed-agent.ts, a child on the same CPUs, with the agent's V8 flags) that makes the flows
  let onRecord = (rec: AccessLogRecord) => { sink(rec); };
  // MEMBRANE_BENCH_FLOWS=0: records are dropped (no flows, no metrics), to measure what the flows
  // cost per request (bench/tls/ab.ts against a tree without this knob: flows on vs off)
  // (checked after the feed below: in the own-process mode the feed's onRecord had replaced the
  // no-op, so the knob measured nothing there)
  const noFlows = process.env.MEMBRANE_BENCH_FLOWS === '0';
  if (benchOwnProcess() && !noFlows) {
    const dir = mkdtempSync(join(tmpdir(), 'bench-feed-'));
    const socketPath = join(dir, 'l7proxy.sock');
    const agent = spawn(process.execPath, [...benchAgentNodeFlags(), fileURLToPath(new URL('./feed-agent.ts', import.meta.url)), socketPath, JSON.stringify(o.remote.labels)], { stdio: ['ignore', 'pipe', 'inherit'] });
    process.on('exit', () => { agent.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }); });
    await new Promise<void>((r) => { agent.stdout.on('data', (d: Buffer) => { if (d.toString().includes('feed ready')) r(); }); });
    // what it prints after (--trace-gc through MEMBRANE_BENCH_AGENT_FLAGS) goes to this process's stderr
    agent.stdout.removeAllListeners('data');
    agent.stdout.pipe(process.stderr);
    // MEMBRANE_BENCH_FEED_MS / _RECORDS / _QUICK_MS: the feed's message age and size bounds (A/B of the feed's batching)
    const feedMs = process.env.MEMBRANE_BENCH_FEED_MS, feedRecords = process.env.MEMBRANE_BENCH_FEED_RECORDS, feedQuick = process.env.MEMBRANE_BENCH_FEED_QUICK_MS;
    const feed = createFeedClient({
      socketPath, onSnapshot: () => {}, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [],
      ...(feedMs ? { messageMs: Number(feedMs) } : {}), ...(feedRecords ? { recordsPerMessage: Number(feedRecords) } : {}),
      ...(feedQuick ? { quickMessageMs: Number(feedQuick) } : {}),
    });
    feed.start();
    onRecord = (rec) => feed.record(rec);
  }
  if (noFlows) onRecord = () => {};
  const proxy = createHttpProxy({
    policy: {
      endpointByIp: () => ({ id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: [] }),
      identityOf: () => o.remote.identity,
      lookup: () => ({ verdict: 'redirect', l7: o.policy }),
      revision: () => 0,
    },
    onRecord: (rec) => onRecord(rec),
    // as the proxy process (src/proxy/process.ts): the feed client keeps no record object
    ...(benchOwnProcess() ? { recordsBorrowed: true } : {}),
    listen: { egress: { host: '127.0.0.1', port: o.port } },
    upstreamOverride: { host: '127.0.0.1', port: o.origin },
    ...(o.configure ? { configure: (chain: HttpFilterChain) => o.configure!(chain, (rec) => onRecord(rec)) } : {}),
  });
  await proxy.start();
  // bench/soak reads the proxy's memory from here (MEMBRANE_BENCH_MEM_MS: the period)
  sampleMemory();
  console.log('ready');
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}
