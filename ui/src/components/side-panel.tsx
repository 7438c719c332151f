/**
 * The side panel: an edge (its counts, requests and why), a workload (the policies selecting it
 * and its effective ingress/egress), or one flow (every field, as `-o dict` and as JSON, and why).
 */
import { memo } from 'preact/compat';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { MapEdge, MapNode, MapSnapshot } from '../model/map.ts';
import type { FlowRow, WhyQuery } from '../model/rows.ts';
import type { FromWorker, ToWorker } from '../worker-protocol.ts';
import { Why } from './why.tsx';
import { PolicyView } from './policy-view.tsx';
import { nodeSubtitle } from './service-map.tsx';

export type Selection = { kind: 'edge'; id: string } | { kind: 'node'; id: string } | { kind: 'flow'; row: FlowRow };

const WHY_PROTO: Record<string, WhyQuery['protocol'] | undefined> = { TCP: 'TCP', UDP: 'UDP', SCTP: 'SCTP', ICMPv4: 'ICMP', ICMPv6: 'ICMPV6' };

export const SidePanel = memo(function SidePanel(p: { selection: Selection | null; snapshot: MapSnapshot; worker: Worker; onClose: () => void }) {
  const ref = useRef<HTMLElement>(null);
  const s = p.selection;
  useEffect(() => {
    if (s) ref.current?.querySelector<HTMLElement>('h2')?.focus();
  }, [s && (s.kind === 'flow' ? s.row.uuid : s.id)]);
  if (!s) {
    return (
      <aside class="panel empty" aria-label="Details">
        <p>Select a connection on the map to see why it was allowed or dropped, a workload to see its policy, or a flow in the table for every field.</p>
      </aside>
    );
  }
  let body;
  if (s.kind === 'edge') {
    const e = p.snapshot.edges.find((x) => x.id === s.id);
    body = e ? <EdgeDetail edge={e} nodes={p.snapshot.nodes} /> : <p>This connection is not in the current view.</p>;
  } else if (s.kind === 'node') {
    const n = p.snapshot.nodes.find((x) => x.id === s.id);
    body = n ? <NodeDetail node={n} /> : <p>This workload is not in the current view.</p>;
  } else body = <FlowDetail row={s.row} worker={p.worker} />;
  return (
    <aside class="panel" aria-label="Details" ref={ref} data-testid="panel" onKeyDown={(e) => { if (e.key === 'Escape') p.onClose(); }}>
      <button type="button" class="close" onClick={p.onClose} aria-label="Close details">×</button>
      {body}
    </aside>
  );
});

function EdgeDetail({ edge: e, nodes }: { edge: MapEdge; nodes: MapNode[] }) {
  const from = nodes.find((n) => n.id === e.from);
  const to = nodes.find((n) => n.id === e.to);
  const proto = WHY_PROTO[e.proto];
  const base: WhyQuery | undefined = proto ? { from: e.peers.from, to: e.peers.to, port: e.port, protocol: proto } : undefined;
  const requests = e.requests.slice(0, 6);
  return (
    <div data-testid="edge-detail">
      <h2 tabIndex={-1}>{from?.name ?? e.from} → {to?.name ?? e.to}</h2>
      <p class="muted">{e.port}/{e.proto}{e.l7.length ? ` · ${e.l7.join(', ')}` : ''} · {e.peers.from} → {e.peers.to}</p>
      <dl class="counts">
        <div class="v-forwarded"><dt>forwarded</dt><dd>{e.counts.forwarded}</dd></div>
        <div class="v-dropped"><dt>dropped</dt><dd>{e.counts.dropped}</dd></div>
        <div class="v-audit"><dt>audit</dt><dd>{e.counts.audit}</dd></div>
        <div class="v-redirected"><dt>redirected</dt><dd>{e.counts.redirected}</dd></div>
        {e.transit > 0 && <div title="forwarded by the source's node; the destination's node gives the verdict above"><dt>sent</dt><dd>{e.transit}</dd></div>}
        <div><dt>rate</dt><dd>{e.rate.toFixed(1)}/s</dd></div>
      </dl>
      {Object.keys(e.dropReasons).length > 0 && <p>Drop reasons: {Object.entries(e.dropReasons).map(([k, v]) => `${k} ×${v}`).join(', ')}</p>}
      {e.sni.length > 0 && <p>TLS server names: {e.sni.join(', ')}</p>}
      {e.ai.length > 0 && (
        <table class="requests" data-testid="edge-ai">
          <caption>AI API calls</caption>
          <thead><tr><th scope="col">Model</th><th scope="col">Calls</th><th scope="col">Refused</th><th scope="col">Prompt tokens</th><th scope="col">Completion tokens</th></tr></thead>
          <tbody>
            {e.ai.map((a) => (
              <tr class={a.refused ? 'v-dropped' : 'v-forwarded'}>
                <td>{a.provider} {a.model}</td><td>{a.requests}</td><td>{a.refused}</td><td>{a.promptTokens}</td><td>{a.completionTokens}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {requests.length > 0 && (
        <table class="requests">
          <caption>HTTP requests</caption>
          <thead><tr><th scope="col">Request</th><th scope="col">Forwarded</th><th scope="col">Dropped</th><th scope="col">Status</th></tr></thead>
          <tbody>
            {requests.map((r) => (
              <tr class={r.counts.dropped ? 'v-dropped' : 'v-forwarded'}>
                <td>{r.method} {r.path}</td><td>{r.counts.forwarded + r.counts.redirected}</td><td>{r.counts.dropped}</td>
                <td>{Object.entries(r.codes).map(([c, n]) => `${c}×${n}`).join(' ')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {base ? (
        <>
          <h3>Why</h3>
          <Why query={base} />
          {proto === 'TCP' && requests.map((r) => (
            <details open={r.counts.dropped > 0} class="why-request">
              <summary>Why {r.method} {r.path} {r.counts.dropped ? 'was denied' : 'was allowed'}</summary>
              <Why query={{ ...base, http: { method: r.method, path: r.path, host: r.host } }} />
            </details>
          ))}
        </>
      ) : <p>No trace for {e.proto} connections.</p>}
    </div>
  );
}

function NodeDetail({ node: n }: { node: MapNode }) {
  const pod = n.pods[0];
  return (
    <div data-testid="node-detail">
      <h2 tabIndex={-1}>{n.name}</h2>
      <p class="muted">{nodeSubtitle(n)} · identity {n.identities.join(', ')}</p>
      {n.pods.length > 0 && <p>Pods: {n.pods.join(', ')}</p>}
      {n.http.length > 0 && <p>HTTP served: {n.http.join(', ')}</p>}
      {n.labels.length > 0 && <details><summary>Labels</summary><ul class="labels">{n.labels.map((l) => <li>{l}</li>)}</ul></details>}
      {pod && n.namespace ? <PolicyView namespace={n.namespace} pod={pod} /> : <p>Not a pod of this cluster: no policy selects it. Rules name it as a peer ({n.kind === 'fqdn' ? 'toFQDNs' : n.kind === 'world' ? 'toEntities: world or toCIDR' : `toEntities: ${n.name}`}).</p>}
    </div>
  );
}

function FlowDetail({ row, worker }: { row: FlowRow; worker: Worker }) {
  const [detail, setDetail] = useState<Extract<FromWorker, { type: 'detail' }> | undefined>();
  useEffect(() => {
    setDetail(undefined);
    const on = (ev: MessageEvent<FromWorker>) => {
      if (ev.data.type === 'detail' && ev.data.uuid === row.uuid) setDetail(ev.data);
    };
    worker.addEventListener('message', on);
    worker.postMessage({ type: 'detail', uuid: row.uuid } satisfies ToWorker);
    return () => worker.removeEventListener('message', on);
  }, [row.uuid]);
  const why = row.why;
  return (
    <div data-testid="flow-detail">
      <h2 tabIndex={-1}>Flow {row.verdict}</h2>
      <p class="muted">{row.src} {row.arrow} {row.dst}</p>
      {detail?.dict ? <pre class="dict" data-testid="flow-dict" tabIndex={0} aria-label="the flow as hubble observe -o dict prints it">{detail.dict}</pre> : detail?.missing ? <p>The flow is no longer in the node's ring{detail.message ? ` (${detail.message})` : ''}.</p> : <p>Loading…</p>}
      {detail?.json && (
        <details>
          <summary>All fields (JSON)</summary>
          <pre class="json" tabIndex={0} aria-label="the flow as JSON">{JSON.stringify(detail.json, null, 2)}</pre>
        </details>
      )}
      {why && <><h3>Why</h3><Why query={why} /></>}
    </div>
  );
}
