// The agent's per-event CPU on its ring consumer, in process: mb_event records of a cross-node
// TCP_CRR connection (policy verdict, traces of SYN, SYN-ACK, ACK, RST) -> decodeEvent ->
// Hubble's ingest (flow built, the default --hubble-metrics, the ring) -> the agent's
// cilium_drop/forward counters, as src/agent/compose.ts wires them. Each root (a checkout of
// membrane: main's worktree beside a branch's) runs in its own process with the agent's V8 flags,
// interleaved round by round; CPU (user+system, GC threads included) per event from the process.
//   bin/node bench/cluster/agent-events.ts [--events 300000] [--rounds 3] [ROOT ...]   (default: this checkout)
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { takeNumberArg } from '../support.ts';
import { crrEventRecords } from './crr-events.ts';
import { AGENT_NODE_FLAGS } from '../../src/lab/names.ts';

const args = process.argv.slice(2);
if (args[0] === '--child') {
  await child(args[1]!, Number(args[2]));
  process.exit(0);
}
const events = takeNumberArg(args, '--events', 300_000), rounds = takeNumberArg(args, '--rounds', 3);
const roots = args.length ? args : [fileURLToPath(new URL('../../', import.meta.url))];
const self = fileURLToPath(import.meta.url);
const per = new Map<string, number[]>(roots.map((r) => [r, []]));
console.log(`load ${loadavg().map((l) => l.toFixed(1)).join(' ')} at start; ${events} events per run`);
for (let r = 0; r < rounds; r++) {
  for (const root of roots) {
    const out = execFileSync(process.execPath, ['--disable-warning=ExperimentalWarning', ...AGENT_NODE_FLAGS, self, '--child', root, String(events)], { encoding: 'utf8' });
    const us = Number(out.trim());
    per.get(root)!.push(us);
    console.log(`round ${r + 1} ${root}: ${us.toFixed(2)} us CPU per event (load ${loadavg()[0]!.toFixed(1)})`);
  }
}
for (const [root, v] of per) {
  const s = [...v].sort((a, b) => a - b);
  console.log(`${root}: median ${s[s.length >> 1]!.toFixed(2)} us per event (${s[0]!.toFixed(2)}-${s[s.length - 1]!.toFixed(2)})`);
}

async function child(root: string, n: number): Promise<void> {
  const codec = await import(`${root}/src/datapath/linux/codec.ts`);
  const { createHubble } = await import(`${root}/src/hubble/index.ts`);
  const { createHubbleMetrics } = await import(`${root}/src/hubble/metrics/index.ts`);
  const { DEFAULT_HUBBLE_METRICS } = await import(`${root}/src/common/config.ts`);
  const { createAgentMetrics } = await import(`${root}/src/agent/metrics.ts`);
  const eps = new Map<string, unknown>([
    ['10.244.1.10', { id: 101, identity: 50001, namespace: 'bench', pod: 'cli', labels: ['k8s:app=cli', 'k8s:io.kubernetes.pod.namespace=bench'] }],
    ['10.244.2.10', { id: 0, identity: 50002, namespace: 'bench', pod: 'srv', labels: ['k8s:app=srv', 'k8s:io.kubernetes.pod.namespace=bench'] }],
  ]);
  const resolver = {
    byIp: (ip: string) => eps.get(ip),
    identityLabels: (id: number) => (id === 50001 ? ['k8s:app=cli'] : id === 50002 ? ['k8s:app=srv'] : undefined),
    namesForIp: () => undefined,
    policiesFor: () => undefined,
  };
  const hubble = createHubble({ nodeName: 'node1', resolver, socketPath: '/nonexistent/hubble.sock' });
  const metrics = createHubbleMetrics(DEFAULT_HUBBLE_METRICS, {});
  const agentMetrics = createAgentMetrics({ policies: async () => 0, policyRevision: () => 0, endpoints: () => [], identities: () => [], mapState: () => undefined, pinRoot: '/nonexistent' });
  hubble.onFlow((f: unknown) => metrics.process(f));
  const records = crrEventRecords(codec.encodeEvent);
  const run = (count: number) => {
    for (let i = 0; i < count; i++) {
      const ev = codec.decodeEvent(records[i % records.length]!, 8, 0n);
      const f = hubble.ingest(ev);
      if (f) agentMetrics.observe(f, ev.length);
    }
  };
  run(50_000); // warm: optimized code, a full Hubble ring
  const t = process.cpuUsage();
  run(n);
  const u = process.cpuUsage(t);
  process.stdout.write(`${(u.user + u.system) / n}\n`);
}
