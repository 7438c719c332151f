/**
 * `membrane connectivity test`: Cilium's connectivity battery (cilium-cli `connectivity test`) as
 * a named list of tests, each a set of policies applied for its duration and a list of actions —
 * one probe from a client pod to a peer with the outcome the policies call for. Pure description:
 * runner.ts deploys the workloads, runs the actions in the pods' namespaces and reports.
 */

export type Expect = 'success' | 'drop' | 'http-403';

export interface Action {
  /** `<scenario>/<n>`, e.g. pod-to-pod/0 */
  name: string;
  from: string;
  /** what is dialled (URL) and a readable peer for the report */
  url: string;
  peer: string;
  expect: Expect;
  /** what the environment must offer for this action (else it is left out) */
  needs?: Feature;
}

/** Beyond pod-to-pod: ClusterIP services with cluster DNS, and the outside world (lab's world hosts) */
export type Feature = 'services' | 'world';

export interface ConnTest {
  name: string;
  /** resources applied (namespace filled in) for the test's duration */
  policies: object[];
  actions: Action[];
  /** what the test is about: without it the whole test is skipped */
  needs?: Feature;
}

export interface BatteryContext {
  namespace: string;
  /** echo pods by name → IP; echo-other-node only with two nodes or more */
  echoIps: Record<string, string>;
  multiNode: boolean;
}

import type { WorkloadSpec } from './workloads.ts';

export const ECHO_PORT = 8080;
export const WORLD_NAME = 'example.com';
export const WORLD_OTHER = 'echo-a.world.lab';

const cnp = (ns: string, name: string, spec: object) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: ns }, spec });
const kubeDns = { matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } };
const dnsEgress = (patterns: string[]) => ({ toEndpoints: [kubeDns], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: patterns.map((p) => ({ matchPattern: p })) } }] });


/** The workloads every test runs against (Cilium's client, client2, echo-same-node, echo-other-node). */
export function workloadSpecs(multiNode: boolean): WorkloadSpec[] {
  const w = (name: string, node: string): WorkloadSpec => {
    const role = name.startsWith('echo') ? 'echo' : 'client';
    return { name, role, node, labels: { app: name, kind: role } };
  };
  return [w('client', 'node1'), w('client2', 'node1'), w('echo-same-node', 'node1'), ...(multiNode ? [w('echo-other-node', 'node2')] : [])];
}

export function battery(ctx: BatteryContext): ConnTest[] {
  const ns = ctx.namespace;
  const echoes = Object.keys(ctx.echoIps).sort();
  const toEcho = (from: string, expect: Expect, path = '/', scenario = 'pod-to-pod'): Action[] => echoes.map((e, i) => ({
    name: `${scenario}/${i}`, from, url: `http://${ctx.echoIps[e]}:${ECHO_PORT}${path}`, peer: `${ns}/${e} (${ctx.echoIps[e]}:${ECHO_PORT}${path})`, expect,
  }));
  const toService = (from: string, expect: Expect): Action[] => echoes.map((e, i) => ({
    name: `pod-to-service/${i}`, from, url: `http://${e}.${ns}.svc.cluster.local:${ECHO_PORT}/`, peer: `service ${ns}/${e}:${ECHO_PORT}`, expect, needs: 'services' as const,
  }));
  const toWorld = (from: string, host: string, expect: Expect, i = 0): Action => ({ name: `pod-to-world/${i}`, from, url: `http://${host}/`, peer: `${host}:80`, expect, needs: 'world' });
  const clientSel = { matchLabels: { kind: 'client' } };
  return [
    {
      name: 'no-policies', policies: [],
      actions: [...toEcho('client', 'success'), ...toEcho('client2', 'success'), ...toService('client', 'success'), toWorld('client', WORLD_NAME, 'success')],
    },
    {
      name: 'all-ingress-deny',
      policies: [{ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'all-ingress-deny', namespace: ns }, spec: { podSelector: {}, policyTypes: ['Ingress'] } }],
      actions: [...toEcho('client', 'drop'), ...toEcho('client2', 'drop')],
    },
    {
      name: 'all-egress-deny',
      policies: [{ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'all-egress-deny', namespace: ns }, spec: { podSelector: {}, policyTypes: ['Egress'] } }],
      actions: [...toEcho('client', 'drop'), toWorld('client', WORLD_NAME, 'drop')],
    },
    {
      name: 'echo-ingress-from-client',
      policies: [cnp(ns, 'echo-ingress-from-client', {
        endpointSelector: { matchLabels: { kind: 'echo' } },
        ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: String(ECHO_PORT), protocol: 'TCP' }] }] }],
      })],
      actions: [...toEcho('client', 'success'), ...toEcho('client2', 'drop'), ...toService('client', 'success')],
    },
    {
      name: 'client-egress-to-entities-world', needs: 'world',
      policies: [cnp(ns, 'client-egress-to-entities-world', { endpointSelector: clientSel, egress: [dnsEgress(['*']), { toEntities: ['world'], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] })],
      actions: [toWorld('client', WORLD_NAME, 'success'), ...toEcho('client', 'drop')],
    },
    {
      name: 'to-fqdns', needs: 'world',
      policies: [cnp(ns, 'client-egress-to-fqdns', { endpointSelector: clientSel, egress: [dnsEgress(['*']), { toFQDNs: [{ matchName: WORLD_NAME }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] })],
      actions: [toWorld('client', WORLD_NAME, 'success', 0), toWorld('client', WORLD_OTHER, 'drop', 1), ...toEcho('client', 'drop')],
    },
    {
      name: 'echo-ingress-l7',
      policies: [cnp(ns, 'echo-ingress-l7', {
        endpointSelector: { matchLabels: { kind: 'echo' } },
        ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: String(ECHO_PORT), protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }] } }] }],
      })],
      actions: [...toEcho('client', 'success', '/public', 'pod-to-pod-public'), ...toEcho('client', 'http-403', '/private', 'pod-to-pod-private'), ...toEcho('client2', 'drop', '/public')],
    },
  ];
}

/**
 * The tests an environment can run: actions needing what it lacks are left out; a test about
 * what it lacks, or left with no action, is skipped (cilium-cli reports skipped tests the same way).
 */
export function applicable(tests: ConnTest[], has: Record<Feature, boolean>): { run: ConnTest[]; skipped: ConnTest[] } {
  const run: ConnTest[] = [];
  const skipped: ConnTest[] = [];
  for (const t of tests) {
    const actions = t.actions.filter((a) => !a.needs || has[a.needs]);
    if ((t.needs && !has[t.needs]) || !actions.length) skipped.push(t);
    else run.push({ ...t, actions });
  }
  return { run, skipped };
}

/** cilium-cli's --test: names or regexps; a leading `!` excludes. No filter: every test. */
export function selectTests(tests: ConnTest[], filters: string[]): ConnTest[] {
  const inc = filters.filter((f) => !f.startsWith('!')).map((f) => new RegExp(f));
  const exc = filters.filter((f) => f.startsWith('!')).map((f) => new RegExp(f.slice(1)));
  return tests.filter((t) => (inc.length === 0 || inc.some((r) => r.test(t.name))) && !exc.some((r) => r.test(t.name)));
}
