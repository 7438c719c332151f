/**
 * What the agent stand-in (bench/feed-agent.ts) does with each access record, one home for it and
 * for bench/hubble/ring-retention.ts --feed (which measures it in process): the agent's own
 * path, Hubble's ingestRecord (the L7 flow, its uuid and emitter, the 4095-flow ring) with the
 * http/flow metrics subscribed. The Observer's server is made but never started.
 */
import type { AccessLogRecord } from '../src/common/access-log.ts';
import { createHubble } from '../src/hubble/index.ts';
import { createHubbleMetrics } from '../src/hubble/metrics/index.ts';
import '../src/hubble/metrics/http.ts';

/** `remoteLabels`: the remote peer's (the origin's) labels; `noring`: the flows are not kept (what keeping them costs). */
export function standInSink(remoteLabels: string[], noring = false): (rec: AccessLogRecord) => void {
  // one resolved view per endpoint, as the agent's resolver hands out (compose.ts: a view per
  // endpoint record, replaced only when the record is): a new object per call would miss the L7
  // parser's per-view cache and make an Endpoint and a WeakMap entry per flow
  const client = { id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
  const hubble = createHubble({ nodeName: 'bench', resolver: { byIp: () => client, identityLabels: () => remoteLabels }, socketPath: '/nonexistent/hubble.sock', capacity: 4095 });
  if (noring) {
    hubble.ring.pushFlow = () => {};
    hubble.ring.pushCompact = () => {};
  }
  const metrics = createHubbleMetrics('http flow');
  // as the agent subscribes its metrics (compose.ts): borrowing (the flow read during the call only)
  hubble.onFlow((f) => metrics.process(f), { borrows: true });
  return (rec) => hubble.ingestRecord(rec);
}
