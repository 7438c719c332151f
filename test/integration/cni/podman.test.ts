/**
 * Real containers: rootful podman (CNI backend) with membrane-cni as its network, inside a
 * namespace standing in for the host (no container packet can reach the machine's network), with
 * its own storage and containers.conf (support/podman.ts). A busybox-static image imported
 * offline. Labels reach the plugin through CNI_ARGS (MEMBRANE_LABELS), as README "protect real
 * containers" documents. Everything — containers, storage, namespaces, pins, the agent, dnsmasq —
 * is removed in `after`, also when a test failed.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { HostModeLab } from '../support/host-mode.ts';
import { createPodman, IMAGE, type Podman } from '../support/podman.ts';
import { callAgent } from '../../../src/agent/api-client.ts';
import type { EndpointView, IdentityView } from '../../../src/agent/views.ts';
import type { Flow } from '../support/lab.ts';

const lab = new HostModeLab(`cnip${process.pid}`, '10.244.213.0/24');
let pm: Podman;
let webIp = '';
let dnsmasq: ChildProcess | undefined;
let dnsIp = '';

const endpoints = async () => (await callAgent<{ items: EndpointView[] }>(lab.socket, 'GET', '/v1/endpoints')).items;
const identities = async () => (await callAgent<{ items: IdentityView[] }>(lab.socket, 'GET', '/v1/identities')).items;

/** A short-lived container (`podman run --rm`) fetching web's page; its stdout. */
async function fetchFrom(name: string, app: string, ip = webIp): Promise<{ ok: boolean; out: string; code: number; stderr: string }> {
  const r = await pm.run(['run', '--rm', '--name', name, IMAGE, 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${ip} 80`], { cniArgs: `MEMBRANE_LABELS=app=${app}` });
  return { ok: r.stdout.includes('membrane-web-ok'), out: r.stdout, code: r.code, stderr: r.stderr };
}

const cnp = {
  apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'web-from-client', namespace: 'default' },
  spec: { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] },
};
const np = {
  apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'web-from-client-np', namespace: 'default' },
  spec: { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 80, protocol: 'TCP' }] }] },
};

describe('podman containers protected by membrane', { timeout: 1_200_000 }, () => {
  before(async () => {
    await lab.startAgent();
    pm = createPodman({ dir: await lab.dir, hostNetns: lab.hostNetns, agentSocket: lab.socket });
    await pm.setup();
    await pm.ok(['run', '-d', '--name', 'web', IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www'], { cniArgs: 'MEMBRANE_LABELS=app=web' });
    webIp = (await pm.ok(['inspect', '-f', '{{.NetworkSettings.Networks.membrane.IPAddress}}', 'web'])).trim();
    assert.match(webIp, /^10\.244\.213\.\d+$/);
  });
  after(async () => {
    dnsmasq?.kill('SIGTERM');
    await pm?.teardown().catch(() => {});
    await lab.cleanup();
  });

  it('web is an endpoint named after the container, with its labels', async () => {
    const ep = (await endpoints()).find((e) => e.pod === 'web');
    assert.ok(ep);
    assert.equal(ep.ipv4, webIp);
    assert.equal(ep.state, 'ready');
    assert.ok(ep.labels.includes('k8s:app=web'));
    // positive control before any policy: everyone reaches web
    assert.equal((await fetchFrom('intruder0', 'intruder')).ok, true);
  });

  for (const [kind, policy] of [['CiliumNetworkPolicy', cnp], ['NetworkPolicy', np]] as const) {
    it(`${kind}: client reaches web, intruder is dropped, flows name the containers with verdicts`, async () => {
      await lab.apply([policy]);
      try {
        const since = new Date();
        const c = await fetchFrom('client', 'client');
        assert.equal(c.ok, true, `client → web: ${c.code} ${c.out} ${c.stderr}`);
        const i = await fetchFrom('intruder', 'intruder');
        assert.equal(i.ok, false, `intruder → web must fail: ${i.out}`);
        const flows = await lab.waitFlows(['--to-pod', 'default/web', '--since', since.toISOString(), '--last', '500'],
          (fs) => fs.some((f) => f.source?.pod_name === 'intruder' && f.verdict === 'DROPPED') && fs.some((f) => f.source?.pod_name === 'client' && f.verdict === 'FORWARDED'));
        const drop = flows.find((f: Flow) => f.source?.pod_name === 'intruder' && f.verdict === 'DROPPED');
        assert.equal(drop?.drop_reason_desc, 'POLICY_DENIED', JSON.stringify(flows.slice(-5)));
        assert.equal(drop?.destination?.pod_name, 'web');
        assert.ok(flows.some((f) => f.source?.pod_name === 'client' && f.destination?.pod_name === 'web' && f.verdict === 'FORWARDED'));
      } finally {
        await lab.delete([policy]);
      }
    });
  }

  it('DNS goes through the DNS proxy: allowed names answered and seen in flows, others REFUSED', async () => {
    // the DNS server: dnsmasq in a namespace attached by the plugin as kube-system/kube-dns
    const dns = await lab.addContainer('kube-dns', { 'k8s-app': 'kube-dns', 'io.kubernetes.pod.namespace': 'kube-system' });
    dnsIp = dns.ip;
    dnsmasq = spawn('ip', ['netns', 'exec', dns.netns, 'dnsmasq', '--no-daemon', '--no-resolv', '--no-hosts', '--port=53', `--listen-address=${dns.ip}`, '--bind-interfaces',
      '--address=/allowed.test/192.0.2.50', '--address=/blocked.test/192.0.2.51', '--user=root', '--pid-file='], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 1000));
    const dnsPolicy = {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'client-dns', namespace: 'default' },
      spec: {
        endpointSelector: { matchLabels: { app: 'dnsclient' } },
        egress: [{
          toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }],
          toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*.allowed.test' }] } }],
        }],
      },
    };
    await lab.apply([dnsPolicy]);
    try {
      const since = new Date();
      const r = await pm.run(['run', '--rm', '--name', 'dnsclient', IMAGE, 'sh', '-c', `nslookup www.allowed.test ${dnsIp}; echo ===; nslookup www.blocked.test ${dnsIp}; true`], { cniArgs: 'MEMBRANE_LABELS=app=dnsclient' });
      const [okPart, badPart] = r.stdout.split('===');
      assert.match(okPart ?? '', /192\.0\.2\.50/, r.stdout + r.stderr);
      assert.doesNotMatch(badPart ?? '', /192\.0\.2\.51/, r.stdout);
      const flows = await lab.waitFlows(['--pod', 'default/dnsclient', '--since', since.toISOString(), '--protocol', 'dns', '--last', '500'],
        (fs) => fs.some((f) => JSON.stringify(f.l7 ?? {}).includes('www.allowed.test')) && fs.some((f) => JSON.stringify(f.l7 ?? {}).includes('www.blocked.test')));
      const allowed = flows.find((f) => JSON.stringify(f.l7 ?? {}).includes('www.allowed.test') && f.verdict === 'FORWARDED');
      const refused = flows.find((f) => JSON.stringify(f.l7 ?? {}).includes('www.blocked.test') && f.verdict === 'DROPPED');
      assert.ok(allowed, JSON.stringify(flows.slice(-6)));
      assert.ok(refused, JSON.stringify(flows.slice(-6)));
    } finally {
      await lab.delete([dnsPolicy]);
    }
  });

  it('the agent restarts: running containers stay enforced while it is down and after', async () => {
    await lab.apply([cnp]);
    const execFetch = async (name: string) => (await pm.run(['exec', name, 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${webIp} 80`])).stdout.includes('membrane-web-ok');
    try {
      await pm.ok(['run', '-d', '--name', 'client-l', IMAGE, 'sleep', '600'], { cniArgs: 'MEMBRANE_LABELS=app=client' });
      await pm.ok(['run', '-d', '--name', 'intruder-l', IMAGE, 'sleep', '600'], { cniArgs: 'MEMBRANE_LABELS=app=intruder' });
      assert.deepEqual([await execFetch('client-l'), await execFetch('intruder-l')], [true, false], 'with the agent');
      await lab.stopAgent();
      // no agent: the pinned datapath keeps enforcing
      assert.deepEqual([await execFetch('client-l'), await execFetch('intruder-l')], [true, false], 'agent down');
      await lab.startAgent();
      await lab.settle();
      assert.deepEqual([await execFetch('client-l'), await execFetch('intruder-l')], [true, false], 'agent restarted');
      const eps = await endpoints();
      for (const p of ['web', 'client-l', 'intruder-l']) assert.equal(eps.find((e) => e.pod === p)?.state, 'ready', p);
    } finally {
      await pm.run(['rm', '-f', '-t', '0', 'client-l', 'intruder-l']);
      await lab.delete([cnp]);
    }
  });

  it('a container started while the agent is down fails with a clear CNI error and leaves nothing behind', async () => {
    await lab.stopAgent();
    try {
      const before = (await lab.hostLinks()).filter((l) => l.startsWith('lxc')).sort();
      const r = await pm.run(['run', '-d', '--name', 'late', IMAGE, 'sleep', '60'], { cniArgs: 'MEMBRANE_LABELS=app=late' });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /membrane agent is not running/, r.stderr);
      assert.deepEqual((await lab.hostLinks()).filter((l) => l.startsWith('lxc')).sort(), before);
      const st = await pm.run(['ps', '--filter', 'name=late', '--filter', 'status=running', '-q']);
      assert.equal(st.stdout.trim(), '');
      await pm.run(['rm', '-f', '-t', '0', 'late']);
    } finally {
      await lab.startAgent();
    }
    assert.equal((await endpoints()).some((e) => e.pod === 'late'), false);
  });

  it('`podman rm` removes the endpoint and its identity reference', async () => {
    const ep = (await endpoints()).find((e) => e.pod === 'web');
    assert.ok(ep);
    const before = (await identities()).find((i) => i.id === ep.identity);
    assert.ok(before && before.references >= 1, JSON.stringify(before));
    await pm.ok(['rm', '-f', '-t', '0', 'web']);
    await lab.settle();
    assert.equal((await endpoints()).some((e) => e.pod === 'web'), false);
    assert.equal((await identities()).some((i) => i.id === ep.identity), false, 'web\'s identity had no other user: released');
    assert.equal((await lab.hostLinks()).includes(ep.hostIfname), false);
  });
});
