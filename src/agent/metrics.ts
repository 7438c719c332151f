/**
 * The agent's own Prometheus metrics, under Cilium's names (`cilium_*`, the agent's :9962), so
 * Cilium dashboards and alerts read them unchanged. Gauges are read from the agent's state when
 * scraped; counters are fed by the decoded flows (hubble.onFlow), i.e. by the packets the
 * datapath reported as drop/trace events and the requests the proxies judged.
 *
 *   cilium_policy                               policies loaded
 *   cilium_policy_max_revision                  highest policy revision
 *   cilium_policy_change_total{outcome}         policy imports and deletes: success | failure (a batch
 *                                               the repository refused; Cilium's successor of
 *                                               the removed cilium_policy_import_errors_total)
 *   cilium_policy_endpoint_enforcement_status{enforcement}  endpoints per enforced direction:
 *                                               ingress | egress | both | none
 *   cilium_endpoint                             endpoints on this node
 *   cilium_endpoint_state{endpoint_state}       endpoints per state
 *   cilium_identity{type}                       identities known (reserved, cluster_local, node_local)
 *   cilium_drop_count_total{reason,direction}   dropped packets (reason: Cilium's drop string)
 *   cilium_drop_bytes_total{reason,direction}   their bytes on the wire
 *   cilium_forward_count_total{direction}       forwarded packets seen at trace points
 *   cilium_forward_bytes_total{direction}       their bytes on the wire
 *   cilium_policy_l7_total{rule,proxy_type}     L7 requests: received, forwarded, denied; proxy_type is
 *                                               Cilium's: fqdn (DNS proxy), envoy (the HTTP/TLS proxy,
 *                                               which stands where Cilium runs Envoy)
 *   cilium_proxy_redirects{protocol_l7}         policy entries that redirect to a proxy, per L7 parser
 *   cilium_bpf_map_pressure{map_name}           fill ratio of each pinned hash/LRU/LPM map
 */
import type { Server } from 'node:http';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Counter, Gauge, Registry } from 'prom-client';
import { BpfMap, MapType } from '../sys/bpf.ts';
import { TrafficDirection, Verdict, type Flow } from '../hubble/gen/flow/flow_pb.js';
import { DROP_REASON_TEXT } from '../hubble/names.ts';
import type { MapState } from '../policy/types.ts';
import { metricsEndpoint } from '../common/metrics-endpoint.ts';
import { fastCounter } from '../common/fast-counter.ts';

export interface AgentMetricsDeps {
  policies(): Promise<number>;
  policyRevision(): number;
  endpoints(): { id: number; state: string; policyEnforcement?: { ingress: boolean; egress: boolean } }[];
  identities(): { scope: 'reserved' | 'cluster' | 'local' }[];
  mapState(endpointId: number): MapState | undefined;
  /** directory of the node's pinned BPF maps */
  pinRoot: string;
  /** series kept in another process (the external L7 proxy's membrane_ai_*), appended to the exposition */
  extra?(): Promise<string>;
}

export interface AgentMetrics {
  registry: Registry;
  /** counts one decoded flow (drops, forwards, L7 verdicts); `bytes`: the packet's length on the wire */
  observe(flow: Flow, bytes?: number): void;
  /** counts one policy import or delete by its outcome */
  policyChange(outcome: 'success' | 'failure'): void;
  serve(port: number, host?: string): Promise<Server>;
  serveUnix(path: string): Promise<Server>;
}

const PRESSURE_TYPES = new Set<number>([MapType.HASH, MapType.LRU_HASH, MapType.LPM_TRIE, MapType.PERCPU_HASH]);
const PRESSURE_EVERY_MS = 30_000;
const DIRECTION = (d: TrafficDirection) => (d === TrafficDirection.INGRESS ? 'INGRESS' : d === TrafficDirection.EGRESS ? 'EGRESS' : 'UNKNOWN');

/** Entries / max_entries of the pinned maps under `root` (walks keys: call rarely). */
export function mapPressure(root: string): { name: string; ratio: number }[] {
  const out: { name: string; ratio: number }[] = [];
  let names: string[] = [];
  try { names = readdirSync(root); } catch { return out; }
  for (const name of names.sort()) {
    let m: BpfMap | undefined;
    try {
      m = BpfMap.fromPin(join(root, name));
      if (!PRESSURE_TYPES.has(m.info.type) || m.info.maxEntries === 0) continue;
      let n = 0;
      for (const _ of m.keys()) n++;
      out.push({ name, ratio: n / m.info.maxEntries });
    } catch {
      // not a map (a program or link pin), or gone meanwhile
    } finally {
      m?.close();
    }
  }
  return out;
}

export function createAgentMetrics(deps: AgentMetricsDeps): AgentMetrics {
  const registry = new Registry();
  const registers = [registry];
  new Gauge({ name: 'cilium_policy', help: 'Number of policies currently loaded', registers, async collect() { this.set(await deps.policies()); } });
  new Gauge({ name: 'cilium_policy_max_revision', help: 'Highest policy revision number in the agent', registers, collect() { this.set(deps.policyRevision()); } });
  const changes = new Counter({ name: 'cilium_policy_change_total', help: 'Number of policy changes by outcome', labelNames: ['outcome'], registers });
  for (const outcome of ['success', 'failure']) changes.inc({ outcome }, 0);
  new Gauge({
    name: 'cilium_policy_endpoint_enforcement_status', help: 'Number of endpoints labeled by policy enforcement status', labelNames: ['enforcement'], registers,
    collect() {
      const by = { ingress: 0, egress: 0, both: 0, none: 0 };
      for (const e of deps.endpoints()) {
        const i = e.policyEnforcement?.ingress ?? false, o = e.policyEnforcement?.egress ?? false;
        by[i && o ? 'both' : i ? 'ingress' : o ? 'egress' : 'none']++;
      }
      for (const [enforcement, n] of Object.entries(by)) this.set({ enforcement }, n);
    },
  });
  new Gauge({ name: 'cilium_endpoint', help: 'Number of endpoints managed by this agent', registers, collect() { this.set(deps.endpoints().length); } });
  new Gauge({
    name: 'cilium_endpoint_state', help: 'Count of all endpoints, tagged by their state', labelNames: ['endpoint_state'], registers,
    collect() {
      this.reset();
      const by = new Map<string, number>();
      for (const e of deps.endpoints()) by.set(e.state, (by.get(e.state) ?? 0) + 1);
      for (const [state, n] of by) this.set({ endpoint_state: state }, n);
    },
  });
  new Gauge({
    name: 'cilium_identity', help: 'Number of identities currently allocated', labelNames: ['type'], registers,
    collect() {
      this.reset();
      const by = { reserved: 0, cluster_local: 0, node_local: 0 };
      for (const i of deps.identities()) by[i.scope === 'reserved' ? 'reserved' : i.scope === 'cluster' ? 'cluster_local' : 'node_local']++;
      for (const [type, n] of Object.entries(by)) this.set({ type }, n);
    },
  });
  new Gauge({
    name: 'cilium_proxy_redirects', help: 'Number of redirects installed for endpoints, labeled by protocol', labelNames: ['protocol_l7'], registers,
    collect() {
      this.reset();
      const by = new Map<string, number>();
      for (const e of deps.endpoints()) {
        for (const { entry } of deps.mapState(e.id)?.entries.values() ?? []) {
          if (entry.l7) by.set(entry.l7.parser, (by.get(entry.l7.parser) ?? 0) + 1);
        }
      }
      for (const [protocol, n] of by) this.set({ protocol_l7: protocol }, n);
    },
  });
  let pressure: { name: string; ratio: number }[] = [];
  let pressureAt = 0;
  new Gauge({
    name: 'cilium_bpf_map_pressure', help: 'Fill percentage of BPF maps (entries / max entries)', labelNames: ['map_name'], registers,
    collect() {
      if (Date.now() - pressureAt > PRESSURE_EVERY_MS) { pressure = mapPressure(deps.pinRoot); pressureAt = Date.now(); }
      this.reset();
      for (const p of pressure) this.set({ map_name: p.name }, p.ratio);
    },
  });
  // per datapath flow (several per new connection): fast counters, label values in scratch arrays
  const drops = fastCounter({ name: 'cilium_drop_count_total', help: 'Total dropped packets, tagged by drop reason and ingress/egress direction', labelNames: ['reason', 'direction'], registers });
  const dropBytes = fastCounter({ name: 'cilium_drop_bytes_total', help: 'Total dropped bytes, tagged by drop reason and ingress/egress direction', labelNames: ['reason', 'direction'], registers });
  const forwardBytes = fastCounter({ name: 'cilium_forward_bytes_total', help: 'Total forwarded bytes, tagged by ingress/egress direction', labelNames: ['direction'], registers });
  const forwards = fastCounter({ name: 'cilium_forward_count_total', help: 'Total forwarded packets, tagged by ingress/egress direction', labelNames: ['direction'], registers });
  const dropLabels = ['', ''];
  const forwardLabels = { INGRESS: ['INGRESS'], EGRESS: ['EGRESS'], UNKNOWN: ['UNKNOWN'] } as const;
  // per proxied request: a fast counter with its label sets made once (src/common/fast-counter.ts)
  const l7 = fastCounter({ name: 'cilium_policy_l7_total', help: 'Number of total proxy requests handled', labelNames: ['rule', 'proxy_type'], registers });
  const L7_SERIES = {
    fqdn: { received: ['received', 'fqdn'], forwarded: ['forwarded', 'fqdn'], denied: ['denied', 'fqdn'] },
    envoy: { received: ['received', 'envoy'], forwarded: ['forwarded', 'envoy'], denied: ['denied', 'envoy'] },
  } as const;
  for (const p of Object.values(L7_SERIES)) for (const v of Object.values(p)) l7.inc(v, 0);

  const endpoint = metricsEndpoint(async () => ({ contentType: registry.contentType, body: (await registry.metrics()) + (deps.extra ? await deps.extra().catch(() => '') : '') }));
  return {
    registry,
    observe(f, bytes = 0) {
      const t = f.eventType?.type;
      if (t === 1) {
        dropLabels[0] = DROP_REASON_TEXT[f.eventType!.subType] ?? String(f.eventType!.subType);
        dropLabels[1] = DIRECTION(f.trafficDirection);
        drops.inc(dropLabels);
        if (bytes > 0) dropBytes.inc(dropLabels, bytes);
      } else if (t === 4 && f.verdict === Verdict.FORWARDED) {
        const labels = forwardLabels[DIRECTION(f.trafficDirection)];
        forwards.inc(labels);
        if (bytes > 0) forwardBytes.inc(labels, bytes);
      }
      else if (t === 129 && !f.isReply) {
        const c = f.l7?.record.case;
        const series = c === 'dns' ? L7_SERIES.fqdn : c === 'http' ? L7_SERIES.envoy : undefined;
        if (!series) return;
        l7.inc(series.received);
        l7.inc(f.verdict === Verdict.DROPPED ? series.denied : series.forwarded);
      }
    },
    policyChange: (outcome) => changes.inc({ outcome }),
    serve: endpoint.serve,
    serveUnix: endpoint.serveUnix,
  };
}

/** Where a node's agent serves its two expositions for host-side scrapers (`membrane lab metrics`). */
export function metricsSocketPaths(nodeDir: string): { hubble: string; agent: string } {
  return { hubble: join(nodeDir, 'hubble-metrics.sock'), agent: join(nodeDir, 'agent-metrics.sock') };
}
