/**
 * The UI's pure models over real flows (src/hubble flow builder for datapath events, the HTTP
 * proxy's flow builder for L7): the service map's nodes and edges, the stable layout, the
 * filter bar's FlowFilters (applied by the real src/hubble/filter.ts), the table rows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { createL7Parser } from '../../../src/hubble/l7-parser.ts';
import { compileRequestFilter } from '../../../src/hubble/filter.ts';
import type { Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import { ServiceMap, edgeVerdict, appLabel, aiOf } from '../../../ui/src/model/map.ts';
import { StableLayout, CARD_W, CARD_H } from '../../../ui/src/model/layout.ts';
import { toFlowFilters, NO_FILTERS, FilterInputError } from '../../../ui/src/model/filters.ts';
import { flowRow, whyQuery } from '../../../ui/src/model/rows.ts';
import { ev, resolver, T0 } from '../hubble/fixtures.ts';

const build = createFlowBuilder({ nodeName: 'node1', resolver });
const http = createL7Parser({ nodeName: 'node1', resolver });
const flow = (over: Parameters<typeof ev>[0]) => build(ev(over))!;
const T0MS = Number(T0 / 1_000_000n);

// client (shop, Deployment client, 12345) → api (shop, 23456) :8080; xwing (default, 34567)
const syn = flow({ srcIp: '10.244.1.5', dstIp: '10.244.1.6', dstPort: 8080, verdict: 0 });
const drop = flow({ type: 1, subType: 133, srcIp: '10.244.1.7', dstIp: '10.244.1.6', srcIdentity: 34567, dstPort: 8080 });
const reply = flow({ srcIp: '10.244.1.6', dstIp: '10.244.1.5', srcPort: 8080, dstPort: 53812, ctReason: 3, srcIdentity: 23456, dstIdentity: 12345 });
const toWorld = flow({ srcIp: '10.244.1.5', dstIp: '198.51.100.10', dstIdentity: 16777217, dstPort: 443, direction: 'egress', endpointId: 101 });
const peers = { client: { ip: '10.244.1.5', port: 53812, identity: 12345 }, server: { ip: '10.244.1.6', port: 8080, identity: 23456 } };
const rec = { l7: 'http' as const, direction: 'ingress' as const, timeMs: T0MS, endpointId: 102, host: 'api', protocol: 'HTTP/1.1', headers: [], latencyNs: 1000, ...peers };
const putReq = http({ ...rec, type: 'request', verdict: 'denied', method: 'PUT', url: 'http://api/v1/exhaust-port', path: '/v1/exhaust-port', code: 0 });
const putRes = http({ ...rec, type: 'response', verdict: 'denied', method: 'PUT', url: 'http://api/v1/exhaust-port', path: '/v1/exhaust-port', code: 403 });
const postReq = http({ ...rec, type: 'request', verdict: 'forwarded', method: 'POST', url: 'http://api/v1/request-landing?x=1', path: '/v1/request-landing', code: 0 });

test('service map: one card per identity, named after the workload; edges by port with verdict counts', () => {
  const m = new ServiceMap();
  for (const f of [syn, drop, reply, putReq, putRes, postReq, toWorld]) m.add(f, T0MS + 1000);
  const s = m.snapshot(T0MS + 1000);
  const ids = s.nodes.map((n) => n.id).sort();
  assert.deepEqual(ids, ['default/34567', 'fqdn:api.openai.com', 'shop/12345', 'shop/23456']);
  const client = s.nodes.find((n) => n.id === 'shop/12345')!;
  assert.equal(client.name, 'client');
  assert.equal(client.kind, 'workload');
  // the proxy's flows name no workload: the app label names the card
  assert.equal(s.nodes.find((n) => n.id === 'shop/23456')!.name, 'api');
  const e = s.edges.find((x) => x.from === 'shop/12345' && x.to === 'shop/23456')!;
  assert.equal(e.port, 8080);
  assert.equal(e.proto, 'TCP');
  assert.deepEqual(e.l7, ['HTTP']);
  assert.equal(e.counts.forwarded, 2, 'the SYN and the POST (the reply is not counted)');
  assert.equal(e.counts.dropped, 1, 'the denied PUT');
  assert.equal(edgeVerdict(e), 'forwarded');
  const put = e.requests.find((r) => r.method === 'PUT')!;
  assert.deepEqual([put.path, put.counts.dropped, put.codes], ['/v1/exhaust-port', 1, { 403: 1 }]);
  assert.equal(e.requests.find((r) => r.method === 'POST')!.path, '/v1/request-landing', 'no query string');
  assert.deepEqual(e.peers, { from: 'shop/client', to: 'shop/api', fromIp: '10.244.1.5', toIp: '10.244.1.6' }, 'a Deployment by its name, a pod by its own');
  const x = s.edges.find((y) => y.from === 'default/34567')!;
  assert.deepEqual([x.counts.dropped, x.counts.forwarded, edgeVerdict(x), x.dropReasons], [1, 0, 'dropped', { POLICY_DENIED: 1 }]);
  const w = s.edges.find((y) => y.to === 'fqdn:api.openai.com')!;
  assert.equal(w.port, 443);
  assert.equal(w.peers.to, '198.51.100.10', 'an outside peer is traced by its address');
  assert.equal(e.rate, 0.3, '3 request flows in the 10 s window');
  assert.equal(m.snapshot(T0MS + 60_000).edges.find((y) => y.id === e.id)!.rate, 0, 'the rate decays');
});

test('appLabel: Hubble UI\'s display-name keys and prefixes', () => {
  assert.equal(appLabel(['k8s:app.kubernetes.io/name=deathstar', 'k8s:org=empire']), 'deathstar');
  assert.equal(appLabel(['k8s:k8s-app=kube-dns']), 'kube-dns');
  assert.equal(appLabel(['k8s:org=empire']), undefined);
});

test('rows read like hubble observe; why asks for the request direction', () => {
  const r = flowRow(reply);
  assert.equal(r.arrow, '<-');
  assert.equal(r.src, 'shop/client:53812');
  assert.equal(r.dst, 'shop/api-xxx:8080');
  assert.deepEqual(whyQuery(reply), { from: 'shop/client', to: 'shop/api-xxx', port: 8080, protocol: 'TCP' });
  assert.deepEqual(whyQuery(putRes), { from: 'shop/client', to: 'shop/api-xxx', port: 8080, protocol: 'TCP', http: { method: 'PUT', path: '/v1/exhaust-port', host: 'api' } });
  assert.equal(flowRow(drop).verdict, 'DROPPED');
});

test('layout: placed cards never move and never overlap as nodes arrive (property)', () => {
  fc.assert(fc.property(fc.array(fc.tuple(fc.nat(12), fc.nat(12)), { minLength: 1, maxLength: 60 }), fc.nat(59), (pairs, cut) => {
    const l = new StableLayout();
    const nodesOf = (ps: [number, number][]) => [...new Set(ps.flat())].map((i) => ({ id: `n${i}`, name: `n${i}`, namespace: i % 2 ? 'a' : 'b' }));
    const edgesOf = (ps: [number, number][]) => ps.map(([a, b]) => ({ from: `n${a}`, to: `n${b}` }));
    const first = pairs.slice(0, Math.min(cut, pairs.length));
    const before = new Map([...l.update(nodesOf(first), edgesOf(first))].map(([k, v]) => [k, { ...v }]));
    const after = l.update(nodesOf(pairs), edgesOf(pairs));
    for (const [k, v] of before) assert.deepEqual(after.get(k), v, `${k} moved`);
    const boxes = [...after.values()];
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i]!, b = boxes[j]!;
      assert.ok(a.x + CARD_W <= b.x || b.x + CARD_W <= a.x || a.y + CARD_H <= b.y || b.y + CARD_H <= a.y, 'cards overlap');
    }
  }), { numRuns: 200 });
});

test('layout: senders left of receivers', () => {
  const l = new StableLayout();
  const b = l.update([{ id: 'a', name: 'a' }, { id: 'b', name: 'b' }, { id: 'c', name: 'c' }], [{ from: 'a', to: 'b' }, { from: 'b', to: 'c' }]);
  assert.deepEqual([b.get('a')!.col, b.get('b')!.col, b.get('c')!.col], [0, 1, 2]);
});

test('filters: one-ended fields make a source OR a destination filter; the server\'s filter decides', () => {
  const pass = (f: typeof NO_FILTERS, x: Flow) => compileRequestFilter(toFlowFilters(f), [])(x);
  assert.deepEqual(toFlowFilters(NO_FILTERS), []);
  const dropped = { ...NO_FILTERS, verdict: 'DROPPED' as const };
  assert.equal(pass(dropped, drop), true);
  assert.equal(pass(dropped, syn), false);
  const ns = { ...NO_FILTERS, namespace: 'default' };
  assert.equal(toFlowFilters(ns).length, 2);
  assert.equal(pass(ns, drop), true, 'source in default');
  assert.equal(pass(ns, syn), false, 'neither end in default');
  const shopApi = { ...NO_FILTERS, namespace: 'shop', pod: 'api' };
  assert.equal(pass(shopApi, syn), true, 'destination pod api-xxx');
  assert.equal(pass({ ...shopApi, verdict: 'DROPPED' }, syn), false, 'and the verdict');
  assert.equal(pass({ ...NO_FILTERS, httpMethod: 'put' }, putReq), true);
  assert.equal(pass({ ...NO_FILTERS, httpMethod: 'put' }, postReq), false);
  assert.equal(pass({ ...NO_FILTERS, httpStatus: '403' }, putRes), true);
  assert.equal(pass({ ...NO_FILTERS, port: '443' }, toWorld), true);
  assert.equal(pass({ ...NO_FILTERS, fqdn: '*.openai.com' }, toWorld), true);
  assert.equal(pass({ ...NO_FILTERS, fqdn: '*.openai.com' }, syn), false);
  assert.equal(pass({ ...NO_FILTERS, label: 'org=alliance' }, drop), true);
  assert.throws(() => toFlowFilters({ ...NO_FILTERS, port: '99999' }), FilterInputError);
  assert.throws(() => toFlowFilters({ ...NO_FILTERS, httpStatus: 'abc' }), FilterInputError);
});

test('service map: AI calls on an edge by provider and model — forwarded and refused calls from the requests, tokens from the responses', () => {
  const m = new ServiceMap();
  const egress = { ...rec, direction: 'egress' as const, endpointId: 101, host: 'api.openai.com', client: peers.client, server: { ip: '198.51.100.10', port: 80, identity: 16777217 } };
  const call = { method: 'POST', url: 'http://api.openai.com/v1/chat/completions', path: '/v1/chat/completions' };
  const mini = { provider: 'openai', operation: 'chat.completions', model: 'gpt-4o-mini', stream: false } as const;
  const flows = [
    http({ ...egress, ...call, type: 'request', verdict: 'forwarded', code: 0, ai: mini }),
    http({ ...egress, ...call, type: 'response', verdict: 'forwarded', code: 200, ai: { ...mini, promptTokens: 23, completionTokens: 8, usage: 'reported' } }),
    http({ ...egress, ...call, type: 'request', verdict: 'forwarded', code: 0, ai: mini }),
    http({ ...egress, ...call, type: 'response', verdict: 'forwarded', code: 200, ai: { ...mini, promptTokens: 20, completionTokens: 10, usage: 'reported' } }),
    http({ ...egress, ...call, type: 'request', verdict: 'denied', code: 0, ai: { ...mini, model: 'gpt-4o', policy: 'shop/chat' } }),
    http({ ...egress, ...call, type: 'response', verdict: 'denied', code: 403, ai: { ...mini, model: 'gpt-4o', policy: 'shop/chat' } }),
    // positive control: an HTTP request without the extension adds no AI row
    http({ ...egress, method: 'GET', url: 'http://api.openai.com/v1/models', path: '/v1/models', type: 'request', verdict: 'forwarded', code: 0 }),
  ];
  for (const f of flows) m.add(f, T0MS + 1000);
  const snap = m.snapshot(T0MS + 1000);
  const e = snap.edges.find((x) => x.port === 80)!;
  assert.deepEqual(e.ai, [
    { provider: 'openai', model: 'gpt-4o-mini', requests: 2, refused: 0, promptTokens: 43, completionTokens: 18 },
    { provider: 'openai', model: 'gpt-4o', requests: 0, refused: 1, promptTokens: 0, completionTokens: 0 },
  ]);
  assert.deepEqual([e.counts.forwarded, e.counts.dropped], [3, 1]);
  assert.ok(snap.edges.filter((x) => x !== e).every((x) => x.ai.length === 0));
  assert.equal(aiOf(flows[6]!), undefined);
  assert.deepEqual(aiOf(flows[1]!), { provider: 'openai', model: 'gpt-4o-mini', promptTokens: 23, completionTokens: 8 });
});

test('service map: the rate is the same whatever order the flows are folded in (the replay folds older flows in after the newest screenful)', () => {
  // one flow a second for 25 s on one edge; the window is the last 10 s
  const at = (s: number) => flow({ srcIp: '10.244.1.5', dstIp: '10.244.1.6', dstPort: 8080, verdict: 0, timeNs: T0 + BigInt(s) * 1_000_000_000n });
  const flows = Array.from({ length: 25 }, (_, s) => at(s));
  const now = T0MS + 24_500;
  const inOrder = new ServiceMap();
  for (const f of flows) inOrder.add(f, now);
  const newestFirst = new ServiceMap();
  for (const f of [...flows.slice(20), ...flows.slice(0, 20)]) newestFirst.add(f, now);
  const rate = (m: ServiceMap) => m.snapshot(now).edges[0]!.rate;
  assert.equal(rate(inOrder), 1, '10 flows in the 10 s window');
  assert.equal(rate(newestFirst), 1, 'older flows folded in late do not reset a later second');
  assert.equal(newestFirst.snapshot(now).edges[0]!.total, 25);
});

test('service map on a cluster: a peer on another node known by its labels alone is the same card; the destination\'s verdict is the edge\'s', () => {
  // the proxy's flow on the server's node names the client by its identity's labels only
  const remote = (f: Flow): Flow => ({ ...f, source: { ...f.source!, podName: '', namespace: '', workloads: [] } });
  const m = new ServiceMap();
  m.add(remote(postReq), T0MS);
  const s1 = m.snapshot(T0MS);
  assert.deepEqual(s1.nodes.map((n) => [n.id, n.name, n.namespace]).sort(), [['shop/12345', 'client', 'shop'], ['shop/23456', 'api', 'shop']]);
  m.add(syn, T0MS);
  const s2 = m.snapshot(T0MS);
  assert.equal(s2.nodes.length, 2, 'the named pod joins the card its labels made');
  assert.equal(s2.edges.length, 1);
  assert.equal(s2.nodes.find((n) => n.id === 'shop/12345')!.kind, 'workload', 'and names its workload');
  // xwing → api on two nodes: forwarded out of xwing's node (from-endpoint), dropped at api's
  const out = flow({ subType: 5, srcIp: '10.244.1.7', dstIp: '10.244.1.6', srcIdentity: 34567, dstPort: 8080, direction: 'egress', endpointId: 103 });
  const m2 = new ServiceMap();
  m2.add(out, T0MS);
  const only = m2.snapshot(T0MS).edges[0]!;
  assert.deepEqual([only.transit, only.counts.forwarded, edgeVerdict(only)], [1, 0, 'forwarded'], 'only the way out seen: forwarded');
  m2.add(drop, T0MS);
  const both = m2.snapshot(T0MS).edges[0]!;
  assert.deepEqual([both.transit, both.counts.forwarded, both.counts.dropped, edgeVerdict(both)], [1, 0, 1, 'dropped'], 'the destination dropped it');
  // the same SYN delivered (to-endpoint) is forwarded
  m2.add(flow({ srcIp: '10.244.1.7', dstIp: '10.244.1.6', srcIdentity: 34567, dstPort: 8080 }), T0MS);
  assert.equal(edgeVerdict(m2.snapshot(T0MS).edges[0]!), 'forwarded');
});

test('service map: kube-dns, the host, world and a named outside host are cards of their own kind', () => {
  const dns = { ...flow({ srcIp: '10.244.1.5', dstIp: '10.244.1.6', dstPort: 53, proto: 17 }) };
  const kubeDns: Flow = { ...dns, destination: { ...dns.destination!, podName: 'coredns', namespace: 'kube-system', identity: 9455, labels: ['k8s:io.kubernetes.pod.namespace=kube-system', 'k8s:k8s-app=kube-dns'], workloads: [] } };
  const toHost = flow({ srcIp: '10.244.1.5', dstIp: '192.168.1.1', dstIdentity: 1, dstPort: 10250, direction: 'egress', endpointId: 101 });
  const toWorldIp = flow({ srcIp: '10.244.1.5', dstIp: '192.0.2.9', dstIdentity: 2, dstPort: 443, direction: 'egress', endpointId: 101 });
  const m = new ServiceMap();
  for (const f of [kubeDns, toHost, toWorldIp, toWorld]) m.add(f, T0MS);
  const kinds = Object.fromEntries(m.snapshot(T0MS).nodes.map((n) => [n.id, [n.kind, n.name]]));
  assert.deepEqual(kinds['kube-system/9455'], ['kube-dns', 'kube-dns']);
  assert.deepEqual(kinds['reserved:host'], ['host', 'host']);
  assert.deepEqual(kinds.world, ['world', 'world']);
  assert.deepEqual(kinds['fqdn:api.openai.com'], ['fqdn', 'api.openai.com']);
});

test('edge verdict and colour: audit and redirected edges read as such; anything forwarded reads forwarded', () => {
  const c = (o: Partial<Record<'forwarded' | 'dropped' | 'audit' | 'redirected' | 'error', number>>) => ({ counts: { forwarded: 0, dropped: 0, audit: 0, redirected: 0, error: 0, ...o } });
  assert.equal(edgeVerdict(c({ audit: 3 })), 'audit');
  assert.equal(edgeVerdict(c({ audit: 3, dropped: 1 })), 'audit');
  assert.equal(edgeVerdict(c({ redirected: 2, dropped: 1 })), 'redirected');
  assert.equal(edgeVerdict(c({ forwarded: 1, redirected: 2, dropped: 1 })), 'forwarded');
  assert.equal(edgeVerdict(c({ dropped: 1 })), 'dropped');
  // an AUDIT flow (policy audit mode) and a REDIRECTED one (to the proxy) fold into their counts
  const m = new ServiceMap();
  m.add({ ...drop, verdict: 4 }, T0MS);
  assert.equal(edgeVerdict(m.snapshot(T0MS).edges[0]!), 'audit');
  const r = new ServiceMap();
  r.add({ ...syn, verdict: 5 }, T0MS);
  assert.equal(edgeVerdict(r.snapshot(T0MS).edges[0]!), 'redirected');
});

test('filters: protocol and node go on both ends', () => {
  const pass = (f: typeof NO_FILTERS, x: Flow) => compileRequestFilter(toFlowFilters(f), [])(x);
  assert.equal(pass({ ...NO_FILTERS, protocol: 'TCP' }, syn), true);
  assert.equal(pass({ ...NO_FILTERS, protocol: 'udp' }, syn), false);
  assert.equal(pass({ ...NO_FILTERS, protocol: 'http' }, putReq), true);
  assert.equal(pass({ ...NO_FILTERS, protocol: 'http' }, syn), false);
  assert.equal(pass({ ...NO_FILTERS, node: 'node1' }, syn), true);
  assert.equal(pass({ ...NO_FILTERS, node: 'node2' }, syn), false);
  assert.equal(pass({ ...NO_FILTERS, node: 'node2', namespace: 'shop' }, syn), false, 'and the one-ended ones');
});
