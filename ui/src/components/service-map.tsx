/**
 * The service map as SVG: a card per workload (or world / FQDN / host), an arrow per
 * (source, destination, port, protocol) coloured by verdict, with its L7 protocol, counts, rate
 * and the denied requests. Every card and edge is a button: Tab reaches it, Enter or Space opens
 * it in the side panel. Cards keep their place as flows arrive (model/layout.ts).
 */
import type { JSX } from 'preact';
import { memo } from 'preact/compat';
import { useMemo, useRef } from 'preact/hooks';
import type { MapEdge, MapNode, MapSnapshot } from '../model/map.ts';
import { edgeVerdict, passedCount } from '../model/verdict.ts';
import { CARD_H, CARD_W, StableLayout, type Box } from '../model/layout.ts';
import type { Selection } from './side-panel.tsx';

const KIND_ICON: Record<MapNode['kind'], string> = {
  workload: '▣', pod: '◻', 'kube-dns': '◎', host: '⌂', world: '◍', fqdn: '◍', reserved: '◇',
};

export function nodeSubtitle(n: MapNode): string {
  if (n.kind === 'fqdn') return 'outside (DNS name)';
  if (n.kind === 'world') return 'outside (world)';
  if (n.kind === 'host' || n.kind === 'reserved') return `reserved identity ${n.identities.join(', ')}`;
  return `${n.namespace} · ${n.kind === 'kube-dns' ? 'kube-dns' : n.workloadKind}`;
}

export function edgeSummary(e: MapEdge, nodes: Map<string, MapNode>): string {
  const from = nodes.get(e.from)?.name ?? e.from;
  const to = nodes.get(e.to)?.name ?? e.to;
  const c = e.counts;
  const parts = [`${from} to ${to}`, `${e.port}/${e.proto}`, ...(e.l7.length ? [e.l7.join(', ')] : []), edgeVerdict(e)];
  parts.push(`${passedCount(e) - c.redirected} forwarded`, `${c.dropped} dropped`);
  if (c.audit) parts.push(`${c.audit} audit`);
  if (c.redirected) parts.push(`${c.redirected} redirected`);
  const denied = e.requests.filter((r) => r.counts.dropped);
  if (denied.length) parts.push(`denied ${denied.map((r) => `${r.method} ${r.path}`).join(', ')}`);
  for (const a of e.ai) parts.push(`AI ${a.provider} ${a.model}: ${a.requests} calls, ${a.refused} refused, ${a.promptTokens + a.completionTokens} tokens`);
  return parts.join(', ');
}

function fmtCount(n: number): string {
  return n < 1000 ? String(n) : n < 1e6 ? `${(n / 1000).toFixed(n < 1e4 ? 1 : 0)}k` : `${(n / 1e6).toFixed(1)}M`;
}

/** The edge label's AI line: tokens spent, and the models when few. */
export function aiLine(e: MapEdge): string | undefined {
  if (e.ai.length === 0) return undefined;
  const tokens = e.ai.reduce((n, a) => n + a.promptTokens + a.completionTokens, 0);
  const refused = e.ai.reduce((n, a) => n + a.refused, 0);
  const models = e.ai.length === 1 ? e.ai[0]!.model : `${e.ai.length} models`;
  return `AI ${truncate(models, 18)} · ${fmtCount(tokens)} tok${refused ? `  ✗${refused}` : ''}`;
}

function fmtRate(r: number): string {
  if (r === 0) return '0/s';
  if (r < 10) return `${r.toFixed(1)}/s`;
  return `${Math.round(r)}/s`;
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

interface Rect { x: number; y: number; w: number; h: number }
const overlaps = (a: Rect, b: Rect) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

/** The edge's path and where along it a label may sit (t from 0 to 1). */
function edgePath(a: Box, b: Box, lane: number): { d: string; at: (t: number) => [number, number] } {
  const x1 = a.x + CARD_W;
  const y1 = a.y + CARD_H / 2 + lane * 8;
  const x2 = b.x;
  const y2 = b.y + CARD_H / 2 + lane * 8;
  if (b.col > a.col) {
    const dx = (x2 - x1) / 2;
    const c1: [number, number] = [x1 + dx, y1];
    const c2: [number, number] = [x2 - dx, y2];
    const at = (t: number): [number, number] => {
      const u = 1 - t;
      return [u * u * u * x1 + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t * t * t * x2, u * u * u * y1 + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t * t * t * y2];
    };
    return { d: `M${x1},${y1} C${c1[0]},${c1[1]} ${c2[0]},${c2[1]} ${x2},${y2}`, at };
  }
  // same column or backwards: loop out to the right, under the cards, and in from the left
  const out = 60 + lane * 16;
  const low = Math.max(a.y, b.y) + CARD_H + 20 + lane * 14;
  const mid = (x1 + x2) / 2;
  return {
    d: `M${x1},${y1} C${x1 + out},${y1} ${x1 + out},${low} ${mid},${low} S${x2 - out},${y2} ${x2},${y2}`,
    at: (t) => [x1 + (x2 - x1) * t, low],
  };
}

const LABEL_TS = [0.5, 0.38, 0.62, 0.28, 0.72, 0.2, 0.8];
const NUDGES = [0, 1, -1, 2, -2, 3, -3, 4, -4];

/** Greedy: the first spot along the path, then nudged up or down, that covers no card or label. */
function placeLabel(at: (t: number) => [number, number], w: number, h: number, taken: Rect[]): Rect & { ax: number; ay: number } {
  let fallback: (Rect & { ax: number; ay: number }) | undefined;
  for (const n of NUDGES) {
    for (const t of LABEL_TS) {
      const [x, y] = at(t);
      const r = { x: x - w / 2, y: y - h / 2 + n * (h / 2 + 4), w, h, ax: x, ay: y };
      if (r.y < 2) continue;
      fallback ??= r;
      if (!taken.some((o) => overlaps(o, r))) return r;
    }
  }
  const [x, y] = at(0.5);
  return fallback ?? { x: x - w / 2, y: Math.max(2, y - h / 2), w, h, ax: x, ay: y };
}

const activate = (fn: () => void) => (e: KeyboardEvent) => {
  if (e.key === 'Enter' || e.key === ' ') {
    e.preventDefault();
    fn();
  }
};

export const ServiceMapView = memo(function ServiceMapView(p: {
  snapshot: MapSnapshot; generation: number; selected: Selection | null;
  onEdge: (e: MapEdge) => void; onNode: (n: MapNode) => void;
}) {
  const layout = useRef<{ gen: number; l: StableLayout }>({ gen: -1, l: new StableLayout() });
  if (layout.current.gen !== p.generation) layout.current = { gen: p.generation, l: new StableLayout() };
  const l = layout.current.l;
  const { nodes, edges } = p.snapshot;
  const boxes = useMemo(() => new Map(l.update(nodes, edges)), [nodes, edges, l]);
  const byId = useMemo(() => new Map(nodes.map((n) => [n.id, n])), [nodes]);
  const { width, height } = l.size;
  const selectedId = p.selected && p.selected.kind !== 'flow' ? p.selected.id : undefined;

  if (!nodes.length) {
    return <div class="map-empty" data-testid="map-empty"><p>No flows yet. Traffic in the lab shows up here as it happens.</p></div>;
  }

  // several edges between the same two cards (other ports) get their own lanes; labels avoid
  // the cards and each other
  const lanes = new Map<string, number>();
  let bottom = 0;
  const taken: Rect[] = [...boxes.values()].map((b) => ({ x: b.x - 4, y: b.y - 4, w: CARD_W + 8, h: CARD_H + 8 }));
  const lineEls: JSX.Element[] = [];
  const edgeEls = edges.map((e) => {
    const a = boxes.get(e.from);
    const b = boxes.get(e.to);
    if (!a || !b) return null;
    const pair = `${e.from}|${e.to}`;
    const lane = lanes.get(pair) ?? 0;
    lanes.set(pair, lane + 1);
    const { d, at } = edgePath(a, b, lane);
    const v = edgeVerdict(e);
    const denied = e.requests.filter((r) => r.counts.dropped);
    const ai = aiLine(e);
    const head = [
      `${e.port}/${e.proto}${e.l7.length ? ` · ${e.l7.join('/')}` : ''}`,
      `✓${passedCount(e)}${e.counts.dropped ? `  ✗${e.counts.dropped}` : ''}${e.counts.audit ? `  ⚠${e.counts.audit}` : ''}  ${fmtRate(e.rate)}`,
      ...(ai ? [ai] : []),
    ];
    const lines = [...head, ...denied.slice(0, 2).map((r) => `✗ ${truncate(`${r.method} ${r.path}`, 26)}${Object.keys(r.codes).length ? ` ${Object.keys(r.codes).join('/')}` : ''}`)];
    const w = Math.max(...lines.map((s) => s.length)) * 6.6 + 14;
    const h = lines.length * 14 + 8;
    const self = e.from === e.to;
    // the name ends with the label's own words (WCAG 2.5.3: a voice user says what they see)
    const label = `${edgeSummary(e, byId)}; shows ${lines.join(' ')}`;
    const spot = self ? { x: a.x + CARD_W - w, y: Math.max(2, a.y - h - 4), w, h, ax: a.x + CARD_W, ay: a.y } : placeLabel(at, w, h, taken);
    taken.push(spot);
    bottom = Math.max(bottom, spot.y + h);
    // a label pushed away from its line gets a leader back to it
    const cy = spot.y + h / 2;
    const leader = Math.abs(cy - spot.ay) > h ? <line class="leader" x1={spot.ax} y1={spot.ay} x2={spot.x + w / 2} y2={cy < spot.ay ? spot.y + h : spot.y} /> : null;
    const cls = `v-${v}${e.counts.dropped && v !== 'dropped' ? ' has-drops' : ''}${selectedId === e.id ? ' selected' : ''}`;
    // lines under every label (a line never covers another edge's label); the label is the button
    lineEls.push(
      <g key={e.id} class={`edge-path ${cls}`} aria-hidden="true" onClick={() => p.onEdge(e)}>
        {!self && <path class="edge-hit" d={d} />}
        {!self && <path class="edge-line" d={d} marker-end={`url(#arrow-${v})`} />}
        {leader}
      </g>,
    );
    return (
      <g key={e.id} class={`edge ${cls}`}
        tabindex={0} role="button" aria-label={label} data-edge-from={e.from} data-edge-to={e.to} data-port={e.port} data-verdict={v}
        onClick={() => p.onEdge(e)} onKeyDown={activate(() => p.onEdge(e))}>
        <title>{label}</title>
        <g class="edge-label" transform={`translate(${spot.x},${spot.y})`}>
          <rect width={w} height={h} rx={5} />
          {lines.map((s, i) => <text x={7} y={16 + i * 14} class={i >= head.length ? 'denied' : ai && i === 2 ? 'ai' : undefined}>{s} </text>)}
        </g>
      </g>
    );
  });

  const nodeEls = nodes.map((n) => {
    const b = boxes.get(n.id);
    if (!b) return null;
    const sub = nodeSubtitle(n);
    const extra = n.http.length ? `${n.http.length} HTTP endpoint${n.http.length === 1 ? '' : 's'}` : n.pods.length > 1 ? `${n.pods.length} pods` : n.kind === 'workload' || n.kind === 'pod' ? `ID ${n.identities.join(', ')}` : '';
    const name = truncate(n.name, 24);
    const subShown = truncate(sub, 32);
    const extraShown = truncate(extra, 34);
    // the name holds the card's visible words in order (WCAG 2.5.3), then what truncation cut
    const full = name !== n.name || subShown !== sub || extraShown !== extra ? `; ${n.name}, ${sub}${extra ? `, ${extra}` : ''}` : '';
    return (
      <g key={n.id} class={`card k-${n.kind}${selectedId === n.id ? ' selected' : ''}`} transform={`translate(${b.x},${b.y})`}
        tabindex={0} role="button" aria-label={`${name}, ${subShown}${extraShown ? `, ${extraShown}` : ''}${full}`} data-node={n.id}
        onClick={() => p.onNode(n)} onKeyDown={activate(() => p.onNode(n))}>
        <rect width={CARD_W} height={CARD_H} rx={8} />
        <text x={14} y={26} class="icon" aria-hidden="true">{KIND_ICON[n.kind]}</text>
        <text x={36} y={26} class="name">{name} </text>
        <text x={14} y={46} class="sub">{subShown} </text>
        <text x={14} y={64} class="extra">{extraShown}</text>
      </g>
    );
  });

  return (
    <div class="map-scroll">
      <svg width={Math.max(width, 300)} height={Math.max(height, bottom + 12, 200)} class="map" role="group" aria-label={`Service map: ${nodes.length} workloads, ${edges.length} connections`} data-testid="map">
        <defs>
          {(['forwarded', 'dropped', 'audit', 'redirected', 'error'] as const).map((v) => (
            <marker id={`arrow-${v}`} viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" class={`arrow v-${v}`}>
              <path d="M0,0 L10,5 L0,10 z" />
            </marker>
          ))}
        </defs>
        <g class="edge-lines">{lineEls}</g>
        <g class="cards">{nodeEls}</g>
        <g class="edges">{edgeEls}</g>
      </svg>
    </div>
  );
});
