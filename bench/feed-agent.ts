/**
 * The agent's side of the external L7 proxy as the L7 benches run it by default (bench/proxy-harness.ts):
 * a feed server (src/proxy/feed/server.ts) that takes the proxy's access records over the unix
 * socket and turns each into a Hubble flow feeding the http/flow metrics and a flow ring, as the
 * agent does. Started by bench/proxy-harness.ts as a child (same CPU pinning as the proxy).
 *
 *   bin/node bench/feed-agent.ts SOCKET [REMOTE-LABELS-JSON]
 *
 * MEMBRANE_BENCH_STANDIN=decode (e.g. `bench/tls/ab.ts --b-env MEMBRANE_BENCH_STANDIN=decode`):
 * the records are read and decoded but no flow is made: what the flows' work costs, apart from
 * receiving the messages.
 */
import { createFeedServer } from '../src/proxy/feed/server.ts';
import { decodeRecords } from '../src/proxy/feed/wire.ts';
import { standInSink } from './feed-agent-sink.ts';

const socketPath = process.argv[2]!;
/** the remote peer's labels (the origin's), as the proxy's harness resolves them */
const remoteLabels = JSON.parse(process.argv[3] ?? '["k8s:app=server"]') as string[];
// MEMBRANE_BENCH_STANDIN=decode: records decoded and counted, no flows (what the flows' work on the proxy's CPU costs the proxy)
const sink = process.env.MEMBRANE_BENCH_STANDIN === 'decode' ? () => {} : standInSink(remoteLabels);
let n = 0;
const server = createFeedServer({
  socketPath, fingerprint: () => '1',
  snapshot: async () => ({ revision: 1, agentPid: process.pid, nodeAddrs: [], endpoints: [], ipcache: [], identities: [], mapStates: [], resources: { Secret: [], AIPolicy: [] }, names: [] }),
  onRecords(items) {
    for (const rec of decodeRecords(items, () => undefined).records) {
      sink(rec); n++;
    }
  },
  // binary frames, as the agent takes them (src/agent/proxy-feed.ts)
  frameRecords: {
    endpointById: () => undefined,
    onRecord(rec) { sink(rec); n++; },
    onFrame() {},
  },
});
await server.start();
console.log('feed ready');
process.on('SIGTERM', () => { console.error(`feed agent: ${n} records`); process.exit(0); });
