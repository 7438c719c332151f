/**
 * "Why": the verdict of the agent's live policy trace for one connection (the engine of
 * `membrane policy trace`), each deciding rule with its file:line, the policies that made the
 * endpoint default-deny, and for a drop a suggested policy (checked by tracing with it).
 */
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, type WhyResponse } from '../api.ts';
import type { WhyQuery } from '../model/rows.ts';

type Trace = WhyResponse['trace'];
type Side = Trace['egress'];
type Rule = Side['rules'][number];

const ruleText = (r: Rule) => `${r.kind} ${r.policy}`;

function RuleRef({ r }: { r: Rule }) {
  return <><strong>{ruleText(r)}</strong> <code class="fileline" data-testid="fileline">{r.file}:{r.line}</code></>;
}

function SideView({ name, s }: { name: string; s: Side }) {
  if (!s.evaluated) return <li class="side"><span class="side-name">{name}</span>: no policy of its own (not a local pod)</li>;
  return (
    <li class={`side v-${s.verdict.toLowerCase()}`} data-testid={`why-${name.toLowerCase()}`}>
      <span class="side-name">{name}</span> at {s.endpoint}: <strong>{s.verdict}</strong>{s.dropReason ? ` (${s.dropReason})` : ''}
      {' '}· {s.defaultDeny ? 'default deny' : 'default allow'}
      <ul>
        {s.rules.map((r) => <li>{s.verdict === 'DROPPED' && s.dropReason === 'POLICY_DENY' ? 'denied by ' : 'allowed by '}<RuleRef r={r} /></li>)}
        {(s.defaultDenyBy ?? []).map((r) => <li data-testid="default-deny-by">no rule allows it; <em>default deny</em> from <RuleRef r={r} /></li>)}
        {s.dropReason === 'POLICY_DENIED' && !(s.defaultDenyBy ?? []).length && <li>no rule allows it (enforcement mode always)</li>}
        {s.dropReason === 'AUTH_REQUIRED' && <li>authentication {s.authRequired} and the peers are not authenticated</li>}
        {s.proxy && <li>redirected to the {s.proxy.toUpperCase()} proxy</li>}
      </ul>
    </li>
  );
}

export function Why({ query }: { query: WhyQuery }) {
  const [res, setRes] = useState<WhyResponse | undefined>();
  const [err, setErr] = useState<ApiError | Error | undefined>();
  const [copied, setCopied] = useState(false);
  const key = JSON.stringify(query);
  useEffect(() => {
    const ctl = new AbortController();
    setRes(undefined);
    setErr(undefined);
    setCopied(false);
    api.why(query, ctl.signal).then(setRes, (e: Error) => { if (!ctl.signal.aborted) setErr(e); });
    return () => ctl.abort();
  }, [key]);
  if (err) return <p class="error" role="alert">{err.message}{err instanceof ApiError && err.hint ? ` (${err.hint})` : ''}</p>;
  if (!res) return <p class="muted" aria-busy="true">Tracing {query.from} → {query.to} {query.port}/{query.protocol}…</p>;
  const t = res.trace;
  const s = res.suggestion;
  const copy = () => {
    void navigator.clipboard?.writeText(s!.yaml).then(() => setCopied(true), () => setCopied(false));
  };
  return (
    <div class="why" data-testid="why">
      <p class={`verdict v-${t.verdict.toLowerCase()}`}>
        <strong data-testid="why-verdict">{t.verdict}</strong>{t.dropReason ? ` (${t.dropReason})` : ''}: {t.source.spec} → {t.destination.spec} {t.port}/{t.protocol}
        {query.http ? ` ${query.http.method} ${query.http.path}` : ''}
      </p>
      <ul class="sides">
        <SideView name="Egress" s={t.egress} />
        <SideView name="Ingress" s={t.ingress} />
      </ul>
      {t.l7?.steps.map((l) => (
        <p class={`l7 ${l.evaluated ? (l.allowed ? 'v-forwarded' : 'v-dropped') : ''}`} data-testid="why-l7">
          L7 ({l.direction}, {l.parser}): {!l.evaluated ? l.note : l.allowed
            ? <>allowed by {l.rule?.index === -1 ? 'an L4 rule (no L7 restriction for this peer)' : <code>{JSON.stringify(l.rule?.rule)}</code>}{l.rule?.rules.length ? <> of {l.rule.rules.map((r) => <RuleRef r={r} />)}</> : ''}</>
            : <><strong>DENIED</strong>{l.status ? ` (HTTP ${l.status})` : ''}: {l.note}</>}
        </p>
      ))}
      {s && (
        <div class="suggestion" data-testid="suggestion">
          <h4>Suggested rule</h4>
          <p>{s.note}</p>
          {s.yaml && (
            <>
              <pre data-testid="suggestion-yaml" tabIndex={0} aria-label="suggested policy YAML">{s.yaml}</pre>
              <p class="suggestion-actions">
                <button type="button" onClick={copy}>{copied ? 'Copied' : 'Copy YAML'}</button>
                <span> then <code>membrane apply -f -</code></span>
              </p>
              {s.check && <p class={`check v-${s.check.trace.verdict.toLowerCase()}`} data-testid="suggestion-check">Checked: with this policy the trace says <strong>{s.check.trace.verdict}</strong>.</p>}
            </>
          )}
        </div>
      )}
      <details>
        <summary>As <code>membrane policy trace</code> prints it</summary>
        <pre class="trace-text" tabIndex={0} aria-label="the trace as membrane policy trace prints it">{res.text}</pre>
      </details>
    </div>
  );
}
