/**
 * deploy/grafana/*.json against what membrane exports, without a Prometheus: every metric a panel
 * query names is registered by the Hubble metrics (with the setting deploy/grafana/README.md
 * gives) or by the agent, and every label a query selects or groups by is one of that metric's
 * labels. test/integration/e2e/prometheus.test.ts runs the same queries against a real Prometheus.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { createHubbleMetrics } from '../../../src/hubble/metrics/index.ts';
import { createAgentMetrics } from '../../../src/agent/metrics.ts';

const DIR = join(import.meta.dirname, '../../../deploy/grafana');
const readme = readFileSync(join(DIR, 'README.md'), 'utf8');
const setting = /```\n([\s\S]*?)```/.exec(readme)![1]!.trim().split('\n').join(' ');

/** metric name → its label names (histograms: also le; every series also has job/instance after a scrape) */
function exported(): Map<string, Set<string>> {
  const hubble = createHubbleMetrics(setting, { openMetrics: true });
  assert.deepEqual(hubble.configErrors, [], 'the README\'s metrics setting is accepted as a whole');
  const agent = createAgentMetrics({ policies: async () => 0, policyRevision: () => 0, endpoints: () => [], identities: () => [], mapState: () => undefined, pinRoot: '/nonexistent' });
  const out = new Map<string, Set<string>>();
  for (const reg of [hubble.registry, agent.registry] as Registry[]) {
    for (const m of reg.getMetricsAsArray() as unknown as { name: string; labelNames: string[]; constructor: { name: string } }[]) {
      const labels = new Set([...m.labelNames, 'job', 'instance']);
      out.set(m.name, labels);
      if (m.constructor.name === 'Histogram') {
        out.set(`${m.name}_bucket`, new Set([...labels, 'le']));
        out.set(`${m.name}_sum`, labels);
        out.set(`${m.name}_count`, labels);
      }
    }
  }
  return out;
}

interface Dashboard { uid: string; title: string; panels: { id: number; title: string; targets: { expr: string }[] }[]; templating: { list: { name: string; query?: unknown }[] } }
const dashboards = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort().map((f) => [f, JSON.parse(readFileSync(join(DIR, f), 'utf8')) as Dashboard] as const);

test('the dashboards Hubble users expect are shipped, each importable (uid, title, datasource variable, unique panel ids)', () => {
  assert.deepEqual(dashboards.map(([f]) => f), ['hubble-dns.json', 'hubble-http.json', 'hubble-network-flows.json', 'hubble-policy.json', 'membrane-agent.json']);
  const uids = new Set<string>();
  for (const [f, d] of dashboards) {
    assert.ok(d.uid && !uids.has(d.uid), `${f}: uid`);
    uids.add(d.uid);
    assert.ok(d.title, `${f}: title`);
    assert.ok(d.templating.list.some((v) => v.name === 'datasource'), `${f}: datasource variable`);
    const ids = d.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `${f}: panel ids`);
    assert.ok(d.panels.every((p) => p.targets.length > 0), `${f}: every panel queries something`);
  }
});

test('every metric and label a panel query names is one membrane exports', () => {
  const have = exported();
  let n = 0;
  for (const [f, d] of dashboards) {
    const vars = d.templating.list.map((v) => (typeof v.query === 'object' && v.query ? (v.query as { query: string }).query : '')).filter(Boolean);
    for (const [where, expr] of [...d.panels.flatMap((p) => p.targets.map((t) => [`${f} / ${p.title}`, t.expr] as const)), ...vars.map((q) => [`${f} / variable`, q] as const)]) {
      const names = [...expr.matchAll(/\b((?:hubble|cilium)_[a-z0-9_]+)/g)].map((m) => m[1]!);
      assert.ok(names.length > 0, `${where}: names no membrane metric: ${expr}`);
      for (const name of names) {
        const labels = have.get(name);
        assert.ok(labels, `${where}: ${name} is not exported by membrane`);
        // selectors right after the name, and the labels grouped by around it
        for (const sel of expr.matchAll(new RegExp(`${name}\\{([^}]*)\\}`, 'g'))) {
          for (const m of sel[1]!.matchAll(/([a-z_]+)\s*(?:=~|!~|!=|=)/g)) assert.ok(labels.has(m[1]!), `${where}: ${name} has no label ${m[1]}`);
        }
        n++;
      }
      const byLabels = [...expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((s) => s.trim()).filter(Boolean));
      const label = /label_values\(\w+, (\w+)\)/.exec(expr)?.[1];
      for (const l of [...byLabels, ...(label ? [label] : [])]) {
        assert.ok(names.some((nm) => have.get(nm)!.has(l)), `${where}: grouped by ${l}, which none of ${names.join(', ')} has`);
      }
    }
  }
  assert.ok(n >= 40, `${n} metric references checked`);
});
