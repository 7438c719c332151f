/**
 * End-to-end semantics (spec §2, §4): policies + pods → MapState → lookup, as the datapath sees it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { World, cnp, ccnp, knp, ns, pod, TCP, UDP, ICMP } from './helpers.ts';
import { decideHTTP } from '../../../src/policy/l7.ts';
import { PolicyMatchType } from '../../../src/policy/types.ts';
import { PolicyImportError } from '../../../src/policy/repository.ts';

function world(opts = {}): World {
  const w = new World(opts);
  w.addNamespace(ns('prod', { env: 'prod' })).addNamespace(ns('dev', { env: 'dev' }));
  w.addPod(pod('prod', 'web', { app: 'web' }, [{ name: 'http', port: 8080 }]));
  w.addPod(pod('prod', 'api', { app: 'api' }, [{ name: 'http', port: 9090 }]));
  w.addPod(pod('prod', 'db', { app: 'db' }));
  w.addPod(pod('dev', 'web', { app: 'web' }));
  return w;
}

const HOST = 1;
const WORLD = 2;
const REMOTE_NODE = 6;

test('CNP fromEndpoints {} = pods of the policy namespace only; CCNP {} = all pods, never host/world', () => {
  const w = world();
  w.apply(cnp('p', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{}] }] }));
  assert.equal(w.allowed('prod/web', 'prod/db', 'TCP', 5432), true);
  assert.equal(w.allowed('dev/web', 'prod/db', 'TCP', 5432), false);
  assert.equal(w.lookup('prod/db', 'ingress', WORLD, TCP, 5432).verdict, 'drop');
  const c = world();
  c.apply(ccnp('c', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{}] }] }));
  assert.equal(c.allowed('dev/web', 'prod/db', 'TCP', 5432), true);
  assert.equal(c.lookup('prod/db', 'ingress', WORLD, TCP, 1).verdict, 'drop');
  assert.equal(c.lookup('prod/db', 'ingress', REMOTE_NODE, TCP, 1).verdict, 'drop');
  // CCNP endpointSelector {} selects pods in every namespace.
  const d = world();
  d.apply(ccnp('c', { endpointSelector: {}, ingress: [{}] }));
  assert.equal(d.allowed('prod/web', 'dev/web', 'TCP', 80), false);
  assert.equal(d.allowed('prod/web', 'prod/api', 'TCP', 80), false);
});

test('cross-namespace by namespace key or namespace labels (spec §2.2)', () => {
  const w = world();
  w.apply(
    cnp('a', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'dev', app: 'web' } }] }] }),
    cnp('b', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEndpoints: [{ matchLabels: { 'io.cilium.k8s.namespace.labels.env': 'dev' } }] }] }),
  );
  assert.equal(w.allowed('dev/web', 'prod/db', 'TCP', 1), true);
  assert.equal(w.allowed('prod/web', 'prod/db', 'TCP', 1), false);
  assert.equal(w.allowed('dev/web', 'prod/api', 'TCP', 1), true);
  assert.equal(w.allowed('prod/web', 'prod/api', 'TCP', 1), false);
});

test('entities: all, world (with CIDR identities), cluster (pods, host, nodes; not world), host', () => {
  const w = world();
  const cidr = w.addCIDR('198.51.100.0/24');
  w.apply(
    cnp('all', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ fromEntities: ['all'] }] }),
    cnp('world', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEntities: ['world'] }] }),
    cnp('cluster', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEntities: ['cluster'] }] }),
  );
  for (const id of [WORLD, HOST, REMOTE_NODE, cidr, w.get('dev/web').identity]) assert.equal(w.lookup('prod/web', 'ingress', id, TCP, 1).verdict, 'forward', `all: ${id}`);
  assert.equal(w.lookup('prod/web', 'ingress', WORLD, TCP, 1).matchType, PolicyMatchType.all);
  assert.equal(w.lookup('prod/api', 'ingress', WORLD, TCP, 1).verdict, 'forward');
  assert.equal(w.lookup('prod/api', 'ingress', cidr, TCP, 1).verdict, 'forward');
  assert.equal(w.lookup('prod/api', 'ingress', w.get('prod/web').identity, TCP, 1).verdict, 'drop');
  assert.equal(w.lookup('prod/db', 'ingress', w.get('dev/web').identity, TCP, 1).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'ingress', REMOTE_NODE, TCP, 1).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'ingress', 4, TCP, 1).verdict, 'forward'); // health
  assert.equal(w.lookup('prod/db', 'ingress', WORLD, TCP, 1).verdict, 'drop');
  assert.equal(w.lookup('prod/db', 'ingress', cidr, TCP, 1).verdict, 'drop');
});

test('world split in dual stack: world, world-ipv4 and world-ipv6', () => {
  const w = world({ dualStack: true });
  w.apply(cnp('w', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egress: [{ toEntities: ['world'] }] }));
  for (const id of [2, 9, 10]) assert.equal(w.lookup('prod/web', 'egress', id, TCP, 443).verdict, 'forward');
  w.apply(cnp('w', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egress: [{ toEntities: ['world-ipv4'] }] }));
  assert.equal(w.lookup('prod/web', 'egress', 9, TCP, 443).verdict, 'forward');
  assert.equal(w.lookup('prod/web', 'egress', 10, TCP, 443).verdict, 'drop');
  w.apply(cnp('w', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egress: [{ toCIDR: ['0.0.0.0/0'] }] }));
  const v6 = w.engine.allocator.allocateSync(w.engine.allocator.lookupById(10)!.labels.union([{ source: 'cidr', key: '2001-db8--0/32', value: '' }])).identity.id;
  assert.equal(w.lookup('prod/web', 'egress', 9, TCP, 443).verdict, 'forward');
  assert.equal(w.lookup('prod/web', 'egress', 10, TCP, 443).verdict, 'drop');
  assert.equal(w.lookup('prod/web', 'egress', v6, TCP, 443).verdict, 'drop');
});

test('CIDR rules select only outside identities: never pods, host or nodes; except carves out', () => {
  const w = world();
  w.apply(cnp('c', 'prod', {
    endpointSelector: { matchLabels: { app: 'web' } },
    egress: [{ toCIDRSet: [{ cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }] }, { toCIDR: ['0.0.0.0/0'], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] }],
  }));
  const ids = Object.fromEntries(w.engine.cidrEntries().map((e) => [e.prefix, e.identity]));
  assert.deepEqual(Object.keys(ids).sort(), ['10.0.0.0/8', '10.1.0.0/16']);
  // An address resolves through the ipcache to the longest prefix: except prefixes have their own identity.
  assert.equal(w.engine.ipcache.lookupIdentity('10.2.3.4'), ids['10.0.0.0/8']);
  assert.equal(w.engine.ipcache.lookupIdentity('10.1.3.4'), ids['10.1.0.0/16']);
  assert.equal(w.lookup('prod/web', 'egress', ids['10.0.0.0/8']!, TCP, 80).verdict, 'forward');
  assert.equal(w.lookup('prod/web', 'egress', ids['10.1.0.0/16']!, TCP, 80).verdict, 'drop');
  assert.equal(w.lookup('prod/web', 'egress', ids['10.1.0.0/16']!, TCP, 443).verdict, 'forward'); // 0.0.0.0/0 on 443
  const inside = w.addCIDR('10.5.5.5/32');
  assert.equal(w.lookup('prod/web', 'egress', inside, TCP, 80).verdict, 'forward');
  // A pod IP inside 10.0.0.0/8 maps to the pod's identity, which CIDR rules never select.
  w.engine.ipcache.upsert('10.244.1.7', w.get('prod/api').identity, 'endpoint');
  assert.equal(w.engine.ipcache.lookupIdentity('10.244.1.7'), w.get('prod/api').identity);
  assert.equal(w.allowed('prod/web', 'prod/api', 'TCP', 80), false);
  assert.equal(w.lookup('prod/web', 'egress', HOST, TCP, 80).verdict, 'drop');
  assert.equal(w.lookup('prod/web', 'egress', WORLD, TCP, 443).verdict, 'forward');
  assert.equal(w.lookup('prod/web', 'egress', WORLD, TCP, 80).verdict, 'drop');
});

test('toFQDNs selects identities carrying its fqdn: label (learned IPs), nothing else', () => {
  const w = world();
  const openai = w.addFQDN('203.0.113.10', [{ matchName: 'api.openai.com' }]);
  const other = w.addFQDN('203.0.113.11', [{ matchPattern: '*.example.com' }]);
  w.apply(cnp('f', 'prod', {
    endpointSelector: { matchLabels: { app: 'web' } },
    egress: [{ toFQDNs: [{ matchName: 'api.openai.com' }], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] }],
  }));
  assert.equal(w.lookup('prod/web', 'egress', openai, TCP, 443).verdict, 'forward');
  assert.equal(w.lookup('prod/web', 'egress', openai, TCP, 80).verdict, 'drop');
  assert.equal(w.lookup('prod/web', 'egress', other, TCP, 443).verdict, 'drop');
  assert.equal(w.lookup('prod/web', 'egress', WORLD, TCP, 443).verdict, 'drop');
  // A name learned later: its new identity is selected without re-importing the policy.
  const later = w.addFQDN('203.0.113.12', [{ matchName: 'api.openai.com' }, { matchPattern: '*.example.com' }]);
  assert.equal(w.lookup('prod/web', 'egress', later, TCP, 443).verdict, 'forward');
});

test('deny beats allow whatever the specificity (spec §4.2, §4.6)', () => {
  const w = world();
  const webId = w.get('prod/web').identity;
  w.apply(
    cnp('allow', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }, { fromEndpoints: [{ matchLabels: { app: 'api' } }] }] }),
    cnp('deny', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }] }, { toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] }),
  );
  const r = w.lookup('prod/db', 'ingress', webId, TCP, 80);
  assert.equal(r.verdict, 'drop');
  assert.equal(r.dropReason, 181);
  const api = w.get('prod/api').identity;
  assert.equal(w.lookup('prod/db', 'ingress', api, TCP, 80).dropReason, 181); // L4 deny for any peer
  assert.equal(w.lookup('prod/db', 'ingress', api, TCP, 81).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'ingress', api, ICMP, 8).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'ingress', api, UDP, 80).verdict, 'forward');
  // The MapState never holds an allow under a covering deny of the same lane.
  const ms = w.mapState('prod/db');
  assert.equal(ms.entries.get(`i/${webId}/6/80/16`)?.entry.verdict, 'deny');
});

test('a deny-only policy puts the endpoint into default deny (#20914); enableDefaultDeny: false does not', () => {
  const w = world();
  w.apply(cnp('d', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egressDeny: [{ toEntities: ['world'] }] }));
  assert.equal(w.lookup('prod/web', 'egress', w.get('prod/api').identity, TCP, 80).dropReason, 133);
  assert.equal(w.lookup('prod/web', 'egress', WORLD, TCP, 80).dropReason, 181);
  w.apply(cnp('d', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egressDeny: [{ toEntities: ['world'] }], enableDefaultDeny: { egress: false } }));
  assert.equal(w.lookup('prod/web', 'egress', w.get('prod/api').identity, TCP, 80).verdict, 'forward');
  assert.equal(w.lookup('prod/web', 'egress', WORLD, TCP, 80).dropReason, 181);
  // Another rule selecting the endpoint without the opt-out switches default deny on again.
  w.apply(cnp('e', 'prod', { endpointSelector: {}, egress: [{ toEndpoints: [{ matchLabels: { app: 'db' } }] }] }));
  assert.equal(w.lookup('prod/web', 'egress', w.get('prod/api').identity, TCP, 80).dropReason, 133);
  assert.equal(w.allowed('prod/web', 'prod/db', 'TCP', 80), true);
});

test('L3-only covers every protocol incl. ICMP; ANY covers TCP/UDP/SCTP not ICMP; port 0; ranges; ICMP types', () => {
  const w = world();
  const web = w.get('prod/web').identity;
  const api = w.get('prod/api').identity;
  const dev = w.get('dev/web').identity;
  w.apply(cnp('p', 'prod', {
    endpointSelector: { matchLabels: { app: 'db' } },
    ingress: [
      { fromEndpoints: [{ matchLabels: { app: 'web' } }] },
      { fromEndpoints: [{ matchLabels: { app: 'api' } }], toPorts: [{ ports: [{ port: '53' }, { port: '0', protocol: 'UDP' }, { port: '8000', endPort: 8010, protocol: 'TCP' }] }] },
      { fromEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'dev' } }], icmps: [{ fields: [{ type: 'EchoRequest' }] }] },
    ],
  }));
  for (const [proto, port] of [[TCP, 1], [UDP, 2], [ICMP, 8], [ICMP, 0], [132, 3]] as const) assert.equal(w.lookup('prod/db', 'ingress', web, proto, port).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'ingress', api, TCP, 53).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'ingress', api, 132, 53).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'ingress', api, ICMP, 8).verdict, 'drop');
  assert.equal(w.lookup('prod/db', 'ingress', api, UDP, 40000).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'ingress', api, UDP, 40000).matchType, PolicyMatchType.l3Proto);
  assert.equal(w.lookup('prod/db', 'ingress', api, TCP, 40000).verdict, 'drop');
  for (const p of [8000, 8007, 8008, 8010]) assert.equal(w.lookup('prod/db', 'ingress', api, TCP, p).verdict, 'forward', String(p));
  for (const p of [7999, 8011]) assert.equal(w.lookup('prod/db', 'ingress', api, TCP, p).verdict, 'drop', String(p));
  assert.equal(w.lookup('prod/db', 'ingress', dev, ICMP, 8).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'ingress', dev, ICMP, 0).verdict, 'drop');
  assert.equal(w.lookup('prod/db', 'ingress', dev, TCP, 8).verdict, 'drop');
  assert.equal(w.lookup('prod/db', 'ingress', web, TCP, 1).matchType, PolicyMatchType.l3Only);
  assert.equal(w.lookup('prod/db', 'ingress', api, TCP, 53).matchType, PolicyMatchType.l3l4);
});

test('L4-only rule: any peer on a port (match type L4-Only), world included', () => {
  const w = world();
  w.apply(cnp('p', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ toPorts: [{ ports: [{ port: '5432', protocol: 'TCP' }] }] }] }));
  for (const id of [WORLD, HOST, w.get('dev/web').identity]) {
    const r = w.lookup('prod/db', 'ingress', id, TCP, 5432);
    assert.equal(r.verdict, 'forward');
    assert.equal(r.matchType, id === HOST ? PolicyMatchType.l4Only : PolicyMatchType.l4Only);
  }
  assert.equal(w.lookup('prod/db', 'ingress', WORLD, TCP, 5433).verdict, 'drop');
});

test('named ports: ingress on the subject’s container ports, egress per destination', () => {
  const w = world();
  w.apply(
    cnp('in', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ toPorts: [{ ports: [{ port: 'http', protocol: 'TCP' }] }] }] }),
    cnp('eg', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, egress: [{ toEndpoints: [{}], toPorts: [{ ports: [{ port: 'http', protocol: 'TCP' }] }] }] }),
  );
  assert.equal(w.lookup('prod/web', 'ingress', WORLD, TCP, 8080).verdict, 'forward');
  assert.equal(w.lookup('prod/web', 'ingress', WORLD, TCP, 9090).verdict, 'drop');
  const web = w.get('prod/web').identity;
  const api = w.get('prod/api').identity;
  assert.equal(w.lookup('prod/db', 'egress', web, TCP, 8080).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'egress', web, TCP, 9090).verdict, 'drop');
  assert.equal(w.lookup('prod/db', 'egress', api, TCP, 9090).verdict, 'forward');
  assert.equal(w.lookup('prod/db', 'egress', api, TCP, 8080).verdict, 'drop');
  assert.equal(w.lookup('prod/db', 'egress', api, UDP, 9090).verdict, 'drop');
});

test('toServices: egress to the pods behind a service', () => {
  const w = world();
  w.engine.setServices([{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'api', namespace: 'prod' }, source: { file: 's', line: 1, col: 1 }, spec: { selector: { app: 'api' }, ports: [{ port: 80, targetPort: 9090 }] } }]);
  w.apply(cnp('s', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egress: [{ toServices: [{ k8sService: { serviceName: 'api', namespace: 'prod' } }], toPorts: [{ ports: [{ port: '9090', protocol: 'TCP' }] }] }] }));
  assert.equal(w.allowed('prod/web', 'prod/api', 'TCP', 9090), true);
  assert.equal(w.allowed('prod/web', 'prod/db', 'TCP', 9090), false);
});

function http(method: string, path: string, host = 'svc') {
  return { method, path, host, headers: {} };
}

test('L7: full-string matching, L4-only rule wildcards L7 for its selector, selectors kept apart (spec §4.4)', () => {
  const w = world();
  const web = w.get('prod/web').identity;
  const dev = w.get('dev/web').identity;
  w.apply(
    cnp('l7', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }] } }] }] }),
    cnp('l4', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'dev' } }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] }),
  );
  const r = w.lookup('prod/api', 'ingress', web, TCP, 80);
  assert.equal(r.verdict, 'redirect');
  const pol = r.entry!.l7!;
  assert.equal(decideHTTP(pol, web, http('GET', '/public')).allowed, true);
  assert.equal(decideHTTP(pol, web, http('GET', '/public/x')).allowed, false); // anchored
  assert.equal(decideHTTP(pol, web, http('HEAD', '/public')).allowed, false);
  // The dev peer has an L4-only rule on the same port: redirected (visibility) but everything allowed.
  const d = w.lookup('prod/api', 'ingress', dev, TCP, 80);
  assert.equal(d.verdict, 'redirect');
  assert.equal(decideHTTP(d.entry!.l7!, dev, http('DELETE', '/admin')).allowed, true);
  // The L7 rules of the web selector never apply to dev's requests and vice versa.
  assert.equal(decideHTTP(d.entry!.l7!, web, http('DELETE', '/admin')).allowed, false);
});

test('L7: the same selector with an L4-only rule on the port allows all requests; an L3-only rule too', () => {
  const w = world();
  const web = w.get('prod/web').identity;
  const sel = { matchLabels: { app: 'web' } };
  w.apply(
    cnp('l7', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEndpoints: [sel], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'GET' }] } }] }] }),
    cnp('l4', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEndpoints: [sel], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] }),
  );
  const r = w.lookup('prod/api', 'ingress', web, TCP, 80);
  assert.equal(r.verdict, 'redirect');
  assert.equal(decideHTTP(r.entry!.l7!, web, http('POST', '/anything')).allowed, true);
  const v = world();
  const vweb = v.get('prod/web').identity;
  v.apply(
    cnp('l7', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'GET' }] } }] }] }),
    cnp('l3', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEndpoints: [sel] }] }),
  );
  const q = v.lookup('prod/api', 'ingress', vweb, TCP, 80);
  assert.equal(q.verdict, 'redirect');
  assert.equal(decideHTTP(q.entry!.l7!, vweb, http('POST', '/x')).allowed, true);
  assert.equal(decideHTTP(q.entry!.l7!, WORLD, http('POST', '/x')).allowed, false);
  assert.equal(decideHTTP(q.entry!.l7!, WORLD, http('GET', '/x')).allowed, true);
  assert.equal(v.lookup('prod/api', 'ingress', vweb, TCP, 81).verdict, 'forward');
});

test('L7: rules of two policies for one selector are ORed; a different parser on the port is an import error', () => {
  const w = world();
  const web = w.get('prod/web').identity;
  const base = (path: string) => cnp(`p${path}`, 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ path }] } }] }] });
  w.apply(base('/a'), base('/b'));
  const pol = w.lookup('prod/api', 'ingress', web, TCP, 80).entry!.l7!;
  // One entry for the web selector, one for the local host (allow-localhost: no L7 restriction).
  assert.deepEqual(pol.perSelector.map((p) => [p.selector, p.http]), [
    ['{any:app=web,k8s:io.kubernetes.pod.namespace=prod}', [{ path: '/a' }, { path: '/b' }]],
    ['{reserved:host}', null],
  ]);
  assert.equal(decideHTTP(pol, web, http('GET', '/b')).allowed, true);
  const revision = w.engine.revision;
  // HTTP and DNS on one egress port of the same pods (ingress has only http and tls, which merge).
  const egress = (name: string, namespace: string, rules: { http?: object[]; dns?: object[] }) => cnp(name, namespace, { endpointSelector: {}, egress: [{ toPorts: [{ ports: [{ port: '53', protocol: 'TCP' }], rules }] }] });
  w.apply(egress('h', 'prod', { http: [{}] }));
  const before = w.engine.revision;
  assert.throws(() => w.apply(egress('d', 'prod', { dns: [{ matchPattern: '*' }] })), (e: unknown) => {
    assert.ok(e instanceof PolicyImportError);
    assert.match(e.issues[0]!.message, /cannot merge conflicting L7 parsers \((dns and http|http and dns)\)/);
    return true;
  });
  assert.equal(w.engine.revision, before, 'nothing changed');
  assert.ok(revision < before);
  // Subjects that never overlap do not conflict.
  w.apply(egress('d2', 'dev', { dns: [{ matchPattern: '*' }] }));
});

test('TLS: serverNames are unioned per selector; conflicting TLS contexts are an error', () => {
  const w = world();
  const e = (names: string[], secret?: string) => ({ toEntities: ['world' as const], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' as const }], serverNames: names, ...(secret ? { terminatingTLS: { secret: { name: secret } } } : {}) }] });
  w.apply(cnp('a', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egress: [e(['a.example.com'])] }), cnp('b', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egress: [e(['*.b.example.com'])] }));
  const r = w.lookup('prod/web', 'egress', WORLD, TCP, 443);
  assert.equal(r.verdict, 'redirect');
  assert.equal(r.entry!.l7!.parser, 'tls');
  assert.deepEqual(r.entry!.l7!.perSelector.map((p) => p.serverNames), [['*.b.example.com', 'a.example.com'], ['*.b.example.com', 'a.example.com'], ['*.b.example.com', 'a.example.com']]);
  assert.throws(() => w.apply(cnp('c', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egress: [e(['x.com'], 's1')] }), cnp('d', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egress: [e(['x.com'], 's2')] })), /conflicting TLS contexts/);
});

test('authentication: required ⇒ authType 1, inherited by narrower wildcard entries', () => {
  // The MapState folding a future mutual-auth datapath needs; without it import rejects `required`.
  const w = world({ enableMutualAuth: true });
  const web = w.get('prod/web').identity;
  w.apply(
    cnp('auth', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }], authentication: { mode: 'required' } }] }),
    cnp('l4', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ toPorts: [{ ports: [{ port: '5432', protocol: 'TCP' }] }] }] }),
  );
  assert.equal(w.lookup('prod/db', 'ingress', web, TCP, 1).authType, 1);
  // The wildcard 5432 entry is longer than web's L3 entry; web still needs authentication there.
  assert.equal(w.lookup('prod/db', 'ingress', web, TCP, 5432).authType, 1);
  assert.equal(w.lookup('prod/db', 'ingress', WORLD, TCP, 5432).authType, 0);
  assert.throws(() => w.apply(
    cnp('x1', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEntities: ['world'], authentication: { mode: 'required' } }] }),
    cnp('x2', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ fromEntities: ['world'], authentication: { mode: 'disabled' } }] }),
  ), /conflicting authentication types/);
});

test('enforcement modes: default, always, never', () => {
  const always = world({ enforcementMode: 'always' });
  assert.equal(always.lookup('prod/web', 'ingress', WORLD, TCP, 80).dropReason, 133);
  assert.equal(always.lookup('prod/web', 'egress', WORLD, TCP, 80).dropReason, 133);
  assert.equal(always.lookup('prod/web', 'ingress', HOST, TCP, 80).verdict, 'forward'); // allow-localhost
  const never = world({ enforcementMode: 'never' });
  never.apply(cnp('d', 'prod', { endpointSelector: {}, ingressDeny: [{ fromEntities: ['all'] }] }));
  assert.equal(never.lookup('prod/web', 'ingress', WORLD, TCP, 80).verdict, 'forward');
  assert.equal(never.mapState('prod/web').entries.size, 0);
  const def = world();
  assert.equal(def.lookup('prod/web', 'ingress', WORLD, TCP, 80).verdict, 'forward');
});

test('allow-localhost: host may reach endpoints under default deny unless a deny matches; policy mode needs a rule', () => {
  const w = world();
  w.apply(cnp('d', 'prod', { endpointSelector: {}, ingress: [{}] }));
  assert.equal(w.lookup('prod/web', 'ingress', HOST, TCP, 80).verdict, 'forward');
  assert.equal(w.lookup('prod/web', 'ingress', HOST, TCP, 80).entry?.origins[0]?.name, 'allow-localhost');
  w.apply(cnp('deny-host', 'prod', { endpointSelector: {}, ingressDeny: [{ fromEntities: ['host'], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] }));
  assert.equal(w.lookup('prod/web', 'ingress', HOST, TCP, 80).dropReason, 181);
  assert.equal(w.lookup('prod/web', 'ingress', HOST, TCP, 81).verdict, 'forward');
  const p = world({ allowLocalhost: 'policy' });
  p.apply(cnp('d', 'prod', { endpointSelector: {}, ingress: [{}] }));
  assert.equal(p.lookup('prod/web', 'ingress', HOST, TCP, 80).dropReason, 133);
  // Host requests to an L7 port are allowed at L7 (health checks keep working).
  const l = world();
  l.apply(cnp('l7', 'prod', { endpointSelector: { matchLabels: { app: 'api' } }, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ path: '/only' }] } }] }] }));
  const r = l.lookup('prod/api', 'ingress', HOST, TCP, 80);
  assert.equal(r.verdict, 'redirect');
  assert.equal(decideHTTP(r.entry!.l7!, HOST, http('GET', '/healthz')).allowed, true);
  assert.equal(decideHTTP(r.entry!.l7!, WORLD, http('GET', '/healthz')).allowed, false);
});

test('Kubernetes NetworkPolicy with CNP deny: deny beats NP allow; NP and CNP allows union', () => {
  const w = world();
  w.apply(
    knp('np', 'prod', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }] }),
    cnp('c', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'api' } }] }] }),
  );
  assert.equal(w.allowed('prod/web', 'prod/db', 'TCP', 5432), true);
  assert.equal(w.allowed('prod/web', 'prod/db', 'UDP', 5432), false); // NP default protocol TCP
  assert.equal(w.allowed('prod/api', 'prod/db', 'UDP', 1), true);
  w.apply(cnp('deny', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }] }] }));
  assert.equal(w.allowed('prod/web', 'prod/db', 'TCP', 5432), false);
  assert.equal(w.lookup('prod/db', 'ingress', w.get('prod/web').identity, TCP, 5432).dropReason, 181);
});

test('origins: the rule of the file and line that produced an entry, log value included', () => {
  const w = world();
  const p = cnp('o', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEntities: ['world'] }], log: { value: 'db-world' } }, 'policies/db.yaml');
  w.apply(p);
  const r = w.lookup('prod/db', 'ingress', WORLD, TCP, 1);
  assert.deepEqual(r.entry!.origins, [{ kind: 'CiliumNetworkPolicy', name: 'o', namespace: 'prod', file: 'policies/db.yaml', line: p.source.line, log: 'db-world' }]);
});

test('match types: Proto-Only for a wildcard peer on all ports of one protocol', () => {
  const w = world();
  w.apply(cnp('p', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ toPorts: [{ ports: [{ port: '0', protocol: 'UDP' }] }] }] }));
  const r = w.lookup('prod/db', 'ingress', WORLD, UDP, 5353);
  assert.equal(r.verdict, 'forward');
  assert.equal(r.matchType, PolicyMatchType.protoOnly);
  assert.equal(w.lookup('prod/db', 'ingress', WORLD, TCP, 5353).dropReason, 133);
});

test('kafka and l7proto (no proxy for them) are rejected and change nothing; fromRequires is rejected; fromNodes selects remote nodes', () => {
  const w = world({ enableNodeSelectorLabels: true });
  const revision = w.engine.revision;
  const codes = (f: () => void) => { try { f(); } catch (e) { return (e as PolicyImportError).issues.map((i) => i.code); } return []; };
  assert.deepEqual(codes(() => w.apply(
    cnp('k', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ toPorts: [{ ports: [{ port: '9092', protocol: 'TCP' }], rules: { kafka: [{ role: 'produce', topic: 'orders' }] } }] }] }),
    cnp('g', 'prod', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ toPorts: [{ ports: [{ port: '7000', protocol: 'TCP' }], rules: { l7proto: 'r2d2', l7: [{ cmd: 'READ' }] } }] }] }),
  )), ['POLICY_KAFKA_UNSUPPORTED', 'POLICY_L7PROTO_UNSUPPORTED']);
  assert.equal(w.engine.revision, revision, 'nothing changed');
  // The port stays as it was: no policy selects db, so it is open (no silent redirect to a missing proxy).
  assert.equal(w.lookup('prod/db', 'ingress', WORLD, TCP, 9092).verdict, 'forward');
  w.apply(cnp('n', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ fromNodes: [{ matchLabels: { zone: 'a' } }] }] }));
  const node = w.engine.allocator.allocateSync(w.engine.allocator.lookupById(REMOTE_NODE)!.labels.union([{ source: 'node', key: 'zone', value: 'a' }])).identity.id;
  assert.equal(w.lookup('prod/web', 'ingress', node, TCP, 1).verdict, 'forward');
  assert.equal(w.lookup('prod/web', 'ingress', REMOTE_NODE, TCP, 1).verdict, 'drop');
  assert.equal(w.lookup('prod/web', 'ingress', HOST, TCP, 1).verdict, 'forward'); // allow-localhost, not the node rule
  assert.throws(() => w.apply(cnp('r', 'prod', { endpointSelector: {}, ingress: [{ fromRequires: [{}] } as never] })), /fromRequires was removed in Cilium 1.19/);
});
