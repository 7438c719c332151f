/** Namespace picker, Hubble's flow filters, follow/pause and the stream's state. */
import { memo } from 'preact/compat';
import { useEffect, useState } from 'preact/hooks';
import { NO_FILTERS, checkFilters, FilterInputError, type UiFilters } from '../model/filter-input.ts';
import type { StreamStatus } from '../app.tsx';

const VERDICTS = ['', 'FORWARDED', 'DROPPED', 'AUDIT', 'REDIRECTED', 'ERROR'] as const;

const TEXT_FIELDS: { key: keyof UiFilters; label: string; placeholder: string; size: number }[] = [
  { key: 'pod', label: 'Pod', placeholder: 'ns/pod prefix', size: 12 },
  { key: 'label', label: 'Label', placeholder: 'org=empire', size: 11 },
  { key: 'protocol', label: 'Protocol', placeholder: 'tcp, http, dns', size: 8 },
  { key: 'port', label: 'Port', placeholder: '80', size: 5 },
  { key: 'fqdn', label: 'FQDN', placeholder: '*.example.com', size: 12 },
  { key: 'httpMethod', label: 'HTTP method', placeholder: 'PUT', size: 6 },
  { key: 'httpStatus', label: 'HTTP status', placeholder: '403, 5+', size: 5 },
  { key: 'node', label: 'Node', placeholder: 'node1', size: 6 },
];

export const TopBar = memo(function TopBar(p: {
  filters: UiFilters; onFilters: (f: UiFilters) => void; paused: boolean; onPause: () => void;
  info: { observer: string; lab?: string; node?: string } | undefined; namespaces: string[];
}) {
  const [draft, setDraft] = useState<UiFilters>(p.filters);
  const [problem, setProblem] = useState<FilterInputError | undefined>();
  useEffect(() => setDraft(p.filters), [p.filters]);

  const submit = (f: UiFilters) => {
    try {
      checkFilters(f);
      setProblem(undefined);
      p.onFilters(f);
    } catch (e) {
      if (e instanceof FilterInputError) setProblem(e);
      else throw e;
    }
  };
  const set = (k: keyof UiFilters, v: string) => setDraft((d) => ({ ...d, [k]: v }));
  const nsOptions = [...new Set([...p.namespaces, ...(p.filters.namespace ? [p.filters.namespace] : [])])].sort();

  return (
    <>
      <div class="brand">
        <h1>membrane</h1>
        <span class="where" title={`flows from ${p.info?.observer ?? '…'}`}>{p.info ? `lab ${p.info.lab ?? '?'} · ${p.info.node ?? ''}` : ''}</span>
      </div>
      <form class="filters" onSubmit={(e) => { e.preventDefault(); submit(draft); }} aria-label="Flow filters">
        <label>
          <span>Namespace</span>
          <select value={draft.namespace} onChange={(e) => { const f = { ...draft, namespace: e.currentTarget.value }; setDraft(f); submit(f); }} data-testid="namespace">
            <option value="">All namespaces</option>
            {nsOptions.map((n) => <option value={n} key={n}>{n}</option>)}
          </select>
        </label>
        <label>
          <span>Verdict</span>
          <select value={draft.verdict} onChange={(e) => { const f = { ...draft, verdict: e.currentTarget.value as UiFilters['verdict'] }; setDraft(f); submit(f); }} data-testid="verdict">
            {VERDICTS.map((v) => <option value={v} key={v}>{v || 'Any verdict'}</option>)}
          </select>
        </label>
        {TEXT_FIELDS.map((t) => (
          <label key={t.key} class={problem?.field === t.key ? 'invalid' : undefined}>
            <span>{t.label}</span>
            <input type="text" size={t.size} value={draft[t.key]} placeholder={t.placeholder} spellcheck={false}
              aria-invalid={problem?.field === t.key} onInput={(e) => set(t.key, e.currentTarget.value)} data-testid={`filter-${t.key}`} />
          </label>
        ))}
        <div class="filter-actions">
          <button type="submit">Apply</button>
          <button type="button" onClick={() => { setDraft(NO_FILTERS); submit(NO_FILTERS); }}>Clear</button>
        </div>
        {problem && <p class="problem" role="alert">{problem.message}</p>}
      </form>
      <div class="stream">
        <button type="button" class={p.paused ? 'pause paused' : 'pause'} aria-pressed={p.paused} onClick={p.onPause} data-testid="follow">
          {p.paused ? '▶ Follow' : '❚❚ Pause'}
        </button>
      </div>
    </>
  );
});

/** The stream's state line: re-rendered with every batch, alone (the filter bar is not). */
export const StreamState = memo(function StreamState({ s, paused }: { s: StreamStatus; paused: boolean }) {
  return (
    <div class="stream-state">
      <span class={`state state-${s.state}`} role="status" aria-live="polite" data-testid="stream-state">
        {s.state === 'live' ? (paused ? 'paused' : 'live') : s.state}
        {` · ${s.received.toLocaleString('en-US')} flows`}
        {s.state === 'live' ? ` · ${Math.round(s.rate).toLocaleString('en-US')}/s` : ''}
        {s.lost ? ` · ${s.lost} lost` : ''}
      </span>
      {s.message && <span class="stream-message" title={s.message}>{s.message}</span>}
    </div>
  );
});
