/** A workload's policy: the policies selecting it (file:line) and its effective ingress/egress. */
import { useEffect, useState } from 'preact/hooks';
import { api, type EndpointPolicyView } from '../api.ts';

type Eff = EndpointPolicyView['ingress'][number];

function peers(r: Eff): string {
  if (r.peers === 'any') return 'any peer';
  const names = r.peers.map((p) => {
    const own = p.labels.filter((l) => l.startsWith('k8s:') && !l.startsWith('k8s:io.cilium.k8s.') && !l.startsWith('k8s:io.kubernetes.pod.namespace'));
    const ns = p.labels.find((l) => l.startsWith('k8s:io.kubernetes.pod.namespace='))?.split('=')[1];
    const reserved = p.labels.filter((l) => l.startsWith('reserved:') || l.startsWith('cidr:') || l.startsWith('fqdn:'));
    const txt = own.length ? `${ns ? `${ns}: ` : ''}${own.map((l) => l.slice(4)).join(', ')}` : reserved.join(', ') || `identity ${p.identity}`;
    return txt;
  });
  return names.join('; ') + (r.morePeers ? ` and ${r.morePeers} more` : '');
}

/** The L7 rules of an entry; a parser with no rules of its own here (TLS server names) is named alone. */
function l7Text(l7: NonNullable<Eff['l7']>): string {
  const rules = l7.rules.map((x) => (x.http === null || x.dns === null ? 'any request' : (x.http ?? []).map((h) => `${h.method ?? '*'} ${h.path ?? '*'}`).join(', ') || (x.dns ? JSON.stringify(x.dns) : ''))).filter(Boolean);
  return rules.length ? `${l7.parser.toUpperCase()}: ${rules.join('; ')}` : l7.parser.toUpperCase();
}

function EffTable({ title, rows, defaultDeny }: { title: string; rows: Eff[]; defaultDeny: boolean }) {
  return (
    <section class="effective" data-testid={`effective-${title.toLowerCase()}`}>
      <h4>{title}: {defaultDeny ? 'default deny (only what is listed is allowed)' : 'default allow (no policy selects this direction)'}</h4>
      {rows.length ? (
        <table>
          <thead><tr><th scope="col">Verdict</th><th scope="col">Port</th><th scope="col">Peers</th><th scope="col">L7</th><th scope="col">Rule</th></tr></thead>
          <tbody>
            {rows.map((r) => (
              <tr class={r.verdict === 'deny' ? 'v-dropped' : 'v-forwarded'}>
                <td>{r.verdict}{r.auth ? ` (auth ${r.auth})` : ''}</td>
                <td>{r.port}</td>
                <td>{peers(r)}</td>
                <td>{r.l7 ? l7Text(r.l7) : ''}</td>
                <td>{r.rules.map((x) => <div>{x.policy} <code>{x.file}:{x.line}</code></div>)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : <p class="muted">{defaultDeny ? 'Nothing is allowed.' : 'Everything is allowed.'}</p>}
    </section>
  );
}

export function PolicyView({ namespace, pod }: { namespace: string; pod: string }) {
  const [v, setV] = useState<EndpointPolicyView | undefined>();
  const [err, setErr] = useState<string | undefined>();
  useEffect(() => {
    const ctl = new AbortController();
    setV(undefined);
    setErr(undefined);
    api.endpointPolicy(namespace, pod, ctl.signal).then(setV, (e: Error) => { if (!ctl.signal.aborted) setErr(e.message); });
    return () => ctl.abort();
  }, [namespace, pod]);
  if (err) return <p class="error" role="alert">{err}</p>;
  if (!v) return <p class="muted" aria-busy="true">Loading policy of {namespace}/{pod}…</p>;
  return (
    <div class="policy-view" data-testid="policy-view">
      <h3>Policy</h3>
      <p class="muted">endpoint {v.endpoint.id} · {v.endpoint.namespace}/{v.endpoint.pod} · identity {v.endpoint.identity} · {v.endpoint.ipv4}</p>
      {v.policies.length ? (
        <ul class="policies">
          {v.policies.map((p) => <li data-testid="selecting-policy">{p.kind} <strong>{p.namespace ? `${p.namespace}/` : ''}{p.name}</strong> <code>{p.file}:{p.line}</code></li>)}
        </ul>
      ) : <p>No policy selects this workload.</p>}
      <EffTable title="Ingress" rows={v.ingress} defaultDeny={v.defaultDeny.ingress} />
      <EffTable title="Egress" rows={v.egress} defaultDeny={v.defaultDeny.egress} />
    </div>
  );
}
