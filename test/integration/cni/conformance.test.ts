/**
 * membrane-cni against the CNI spec, called exactly as a runtime calls it (CNI_* variables and
 * the network configuration on stdin), with a real host-mode agent in a namespace standing in
 * for the host and real namespaces standing in for containers.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { HostModeLab } from '../support/host-mode.ts';
import { callAgent } from '../../../src/agent/api-client.ts';
import type { EndpointView, IdentityView } from '../../../src/agent/views.ts';

const lab = new HostModeLab(`cnic${process.pid}`, '10.244.211.0/24');

async function endpoints(): Promise<EndpointView[]> {
  return (await callAgent<{ items: EndpointView[] }>(lab.socket, 'GET', '/v1/endpoints')).items;
}
async function identities(): Promise<IdentityView[]> {
  return (await callAgent<{ items: IdentityView[] }>(lab.socket, 'GET', '/v1/identities')).items;
}

describe('membrane-cni conformance', { timeout: 600_000 }, () => {
  let defaultRoute = '';
  before(async () => {
    // the stand-in host has an uplink and a default route of its own, as a real host does
    await lab.startHost();
    await lab.sh('ip', ['-n', lab.hostNetns, 'link', 'add', 'uplink0', 'type', 'veth', 'peer', 'name', 'uplink1']);
    await lab.sh('ip', ['-n', lab.hostNetns, 'addr', 'add', '192.0.2.200/24', 'dev', 'uplink0']);
    await lab.sh('ip', ['-n', lab.hostNetns, 'link', 'set', 'uplink0', 'up']);
    await lab.sh('ip', ['-n', lab.hostNetns, 'link', 'set', 'uplink1', 'up']);
    await lab.sh('ip', ['-n', lab.hostNetns, 'route', 'add', 'default', 'via', '192.0.2.254', 'dev', 'uplink0', 'onlink']);
    defaultRoute = (await lab.sh('ip', ['-n', lab.hostNetns, 'route', 'show', 'default'])).stdout;
    await lab.startAgent();
  });
  after(async () => { await lab.cleanup(); });

  it('host mode keeps the host\'s default route and attaches to no device it was not given', async () => {
    const c = await lab.addContainer('probe', { app: 'probe' });
    assert.equal((await lab.sh('ip', ['-n', lab.hostNetns, 'route', 'show', 'default'])).stdout, defaultRoute);
    // the datapath pins one tcx link per device and direction (src/datapath/linux/loader.ts)
    const links = (await readdir(join(lab.paths.pinRoot('node1'), 'links'))).sort();
    assert.ok(links.some((l) => /^lxc[0-9a-f]{11}-ingress$/.test(l)), `the container's veth carries the datapath: ${links.join(' ')}`);
    assert.deepEqual(links.filter((l) => !l.startsWith('lxc')), [], 'nothing on the uplink or any other device');
    assert.equal((await lab.cni({ command: 'DEL', containerId: c.containerId, netns: `/run/netns/${c.netns}`, ifname: 'eth0' })).code, 0);
  });

  it('VERSION lists the versions it speaks', async () => {
    const r = await lab.cni({ command: 'VERSION', stdin: JSON.stringify({ cniVersion: '1.1.0' }) });
    assert.equal(r.code, 0, r.raw);
    assert.deepEqual(r.out, { cniVersion: '1.1.0', supportedVersions: ['1.0.0', '1.1.0'] });
  });

  it('bad network configuration: code 7 (missing name), 6 (not JSON); unknown version: code 1; missing variable: code 4', async () => {
    const noName = await lab.cni({ command: 'ADD', containerId: 'x1', netns: '/run/netns/none', ifname: 'eth0', stdin: JSON.stringify({ cniVersion: '1.0.0', type: 'membrane-cni' }) });
    assert.equal(noName.code, 1);
    assert.equal(noName.out?.code, 7, noName.raw);
    assert.match(String(noName.out?.msg), /name/);
    const badSocket = await lab.cni({ command: 'ADD', containerId: 'x1', netns: '/run/netns/none', ifname: 'eth0', stdin: lab.netconf({ agentSocket: 'relative.sock' }) });
    assert.equal(badSocket.out?.code, 7, badSocket.raw);
    const notJson = await lab.cni({ command: 'ADD', containerId: 'x1', netns: '/run/netns/none', ifname: 'eth0', stdin: '{cniVersion' });
    assert.equal(notJson.out?.code, 6, notJson.raw);
    const v = await lab.cni({ command: 'ADD', containerId: 'x1', netns: '/run/netns/none', ifname: 'eth0', stdin: lab.netconf({ cniVersion: '0.1.0' }) });
    assert.equal(v.code, 1);
    assert.equal(v.out?.code, 1, v.raw);
    const noId = await lab.cni({ command: 'ADD', netns: '/run/netns/none', ifname: 'eth0' });
    assert.equal(noId.out?.code, 4, noId.raw);
    assert.match(String(noId.out?.msg), /CNI_CONTAINERID/);
    const cmd = await lab.cni({ command: 'FROB' });
    assert.equal(cmd.out?.code, 4, cmd.raw);
    // none of these left an endpoint
    assert.deepEqual(await endpoints(), []);
  });

  it('ADD attaches with its labels, CHECK passes, a deleted veth fails CHECK, DEL removes everything and is idempotent', async () => {
    const web = await lab.addContainer('web', { app: 'web', 'io.kubernetes.pod.namespace': 'shop' });
    const client = await lab.addContainer('client', { app: 'client', 'io.kubernetes.pod.namespace': 'shop' });
    const eps = await endpoints();
    const ep = eps.find((e) => e.pod === 'web');
    assert.ok(ep, JSON.stringify(eps));
    assert.equal(ep.namespace, 'shop');
    assert.equal(ep.state, 'ready');
    assert.equal(ep.ipv4, web.ip);
    assert.ok(ep.labels.includes('k8s:app=web'), ep.labels.join(' '));
    assert.ok(ep.labels.includes('k8s:io.kubernetes.pod.namespace=shop'), ep.labels.join(' '));
    // positive control: the two containers reach each other through the host
    assert.equal(await lab.ping(client.netns, web.ip), true);

    const check = await lab.cni({ command: 'CHECK', containerId: web.containerId, netns: `/run/netns/${web.netns}`, ifname: 'eth0' });
    assert.equal(check.code, 0, check.raw);
    assert.equal(check.raw, '');

    // the host end of web's veth deleted behind the plugin's back: CHECK reports it
    const hostIf = ep.hostIfname;
    assert.ok((await lab.hostLinks()).includes(hostIf));
    await lab.sh('ip', ['-n', lab.hostNetns, 'link', 'del', hostIf]);
    const broken = await lab.cni({ command: 'CHECK', containerId: web.containerId, netns: `/run/netns/${web.netns}`, ifname: 'eth0' });
    assert.equal(broken.code, 1);
    assert.equal(broken.out?.code, 100, broken.raw);
    assert.match(String(broken.out?.msg), new RegExp(`host veth ${hostIf} is missing`));

    const webIdentity = ep.identity;
    const del = await lab.cni({ command: 'DEL', containerId: web.containerId, netns: `/run/netns/${web.netns}`, ifname: 'eth0' });
    assert.equal(del.code, 0, del.raw);
    assert.equal((await endpoints()).some((e) => e.pod === 'web'), false);
    assert.equal((await identities()).some((i) => i.id === webIdentity), false, 'the identity reference was released');
    const ipam = JSON.parse(await readFile(join(lab.paths.nodeDir('node1'), 'cni-ipam.json'), 'utf8')) as Record<string, string>;
    assert.equal(Object.values(ipam).includes(web.ip), false, 'the address was released');
    assert.equal((await lab.sh('ip', ['-n', lab.hostNetns, 'route', 'show', `${web.ip}/32`])).stdout.trim(), '');
    // again: still success
    const again = await lab.cni({ command: 'DEL', containerId: web.containerId, netns: `/run/netns/${web.netns}`, ifname: 'eth0' });
    assert.equal(again.code, 0, again.raw);
    // client is untouched
    assert.equal((await endpoints()).find((e) => e.pod === 'client')?.state, 'ready');
    const cdel = await lab.cni({ command: 'DEL', containerId: client.containerId, netns: `/run/netns/${client.netns}`, ifname: 'eth0' });
    assert.equal(cdel.code, 0, cdel.raw);
    assert.equal((await lab.hostLinks()).filter((l) => l.startsWith('lxc')).length, 0, (await lab.hostLinks()).join(' '));
  });

  // CNI_NETNS is the caller's word: the agent enters that namespace, writes its IPv6 sysctls
  // (all, default), makes the container's interface with its address and routes, a default
  // route among them. Naming the agent's own namespace (the host's) would do all that to the host:
  // its IPv6 switched off, a pod's interface and routes in it, a default route through the pod
  // gateway where the host had none. Naming a file that is no namespace must not get that far.
  it('ADD naming the host\'s own network namespace, or a file that is no network namespace, is refused (code 4) and changes nothing of the host', async () => {
    const sysctls = async () => (await lab.sh('ip', ['netns', 'exec', lab.hostNetns, 'sysctl', '-n', 'net.ipv6.conf.all.disable_ipv6', 'net.ipv6.conf.default.disable_ipv6'])).stdout;
    const links = async () => (JSON.parse((await lab.sh('ip', ['-n', lab.hostNetns, '-j', 'link', 'show'])).stdout) as { ifname: string }[]).map((l) => l.ifname).sort();
    const routes = async () => (await lab.sh('ip', ['-n', lab.hostNetns, 'route', 'show', 'table', 'all'])).stdout;
    await lab.sh('ip', ['netns', 'exec', lab.hostNetns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.default.disable_ipv6=0']);
    // IPv6 switched on gives each link a link-local address whose `local` route appears only once
    // its duplicate address detection ends (~1 s): the host's state is read after that, not during
    for (const t0 = Date.now(); (await lab.sh('ip', ['-n', lab.hostNetns, '-6', 'addr', 'show', 'tentative'])).stdout.trim() !== '';) {
      assert.ok(Date.now() - t0 < 10_000, 'the host namespace\'s IPv6 addresses still tentative after 10 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const before = { sysctls: await sysctls(), links: await links(), routes: await routes() };
    assert.equal(before.sysctls, '0\n0\n', 'the host has IPv6 on (precondition)');
    for (const netns of [`/run/netns/${lab.hostNetns}`, '/etc/hostname']) {
      const r = await lab.cni({ command: 'ADD', containerId: randomBytes(32).toString('hex'), netns, ifname: 'eth9', args: 'IgnoreUnknown=1;K8S_POD_NAME=intruder' });
      assert.deepEqual({ sysctls: await sysctls(), links: await links(), routes: await routes() }, before, `${netns}: the host unchanged (${r.raw})`);
      assert.equal(r.code, 1, `${netns}: ADD refused: ${r.raw}`);
      assert.equal(r.out?.code, 4, `${netns}: an invalid CNI_NETNS (code 4): ${r.raw}`);
      assert.match(String(r.out?.msg), /namespace/, r.raw);
    }
    assert.equal((await endpoints()).filter((e) => e.pod === 'intruder').length, 0, 'no endpoint left');
  });

  it('DEL of a container it never saw succeeds (also without CNI_NETNS)', async () => {
    const r = await lab.cni({ command: 'DEL', containerId: 'f'.repeat(64), ifname: 'eth0' });
    assert.equal(r.code, 0, r.raw);
    assert.equal(r.raw, '');
  });

  it('CHECK of a container it never saw: code 3', async () => {
    const r = await lab.cni({ command: 'CHECK', containerId: 'e'.repeat(64), netns: '/run/netns/none', ifname: 'eth0' });
    assert.equal(r.out?.code, 3, r.raw);
  });

  it('ADD returns only once the policy is in the datapath: the first packet is already judged', async () => {
    await lab.apply([{
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'db-from-app', namespace: 'default' },
      spec: { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'app' } }] }] },
    }]);
    const app = await lab.addContainer('app', { app: 'app' });
    const other = await lab.addContainer('other', { app: 'other' });
    const db = await lab.addContainer('db', { app: 'db' });
    // no wait between ADD and the packets
    const [allowed, denied] = await Promise.all([lab.ping(app.netns, db.ip), lab.ping(other.netns, db.ip)]);
    assert.equal(allowed, true, 'app → db is allowed');
    assert.equal(denied, false, 'other → db is denied');
    const flows = await lab.waitFlows(['--to-pod', 'default/db', '--verdict', 'DROPPED'], (fs) => fs.some((f) => f.source?.pod_name === 'other'));
    const drop = flows.find((f) => f.source?.pod_name === 'other');
    assert.equal(drop?.drop_reason_desc, 'POLICY_DENIED', JSON.stringify(drop));
    for (const c of [app, other, db]) assert.equal((await lab.cni({ command: 'DEL', containerId: c.containerId, netns: `/run/netns/${c.netns}`, ifname: 'eth0' })).code, 0);
  });

  it('GC removes the attachments the runtime no longer has, and keeps the valid ones', async () => {
    const keep = await lab.addContainer('keep', { app: 'keep' });
    const gone = await lab.addContainer('gone', { app: 'gone' });
    const r = await lab.cni({ command: 'GC', stdin: lab.netconf({ 'cni.dev/valid-attachments': [{ containerID: keep.containerId, ifname: 'eth0' }] }) });
    assert.equal(r.code, 0, r.raw);
    const pods = (await endpoints()).map((e) => e.pod);
    assert.deepEqual(pods, ['keep']);
    void gone;
    assert.equal((await lab.cni({ command: 'DEL', containerId: keep.containerId, netns: `/run/netns/${keep.netns}`, ifname: 'eth0' })).code, 0);
  });

  it('with the agent down: STATUS is code 50, ADD is code 11 naming the agent, and leaves nothing behind', async () => {
    const status = await lab.cni({ command: 'STATUS' });
    assert.equal(status.code, 0, status.raw);
    await lab.stopAgent();
    const down = await lab.cni({ command: 'STATUS' });
    assert.equal(down.out?.code, 50, down.raw);
    const linksBefore = await lab.hostLinks();
    const netns = await lab.containerNetns();
    const r = await lab.cni({ command: 'ADD', containerId: 'd'.repeat(64), netns: `/run/netns/${netns}`, ifname: 'eth0', args: 'K8S_POD_NAME=late' });
    assert.equal(r.code, 1);
    assert.equal(r.out?.code, 11, r.raw);
    assert.match(String(r.out?.msg), /membrane agent is not running/);
    assert.deepEqual(await lab.hostLinks(), linksBefore);
    const inside = await lab.sh('ip', ['-n', netns, '-j', 'link', 'show']);
    assert.deepEqual((JSON.parse(inside.stdout) as { ifname: string }[]).map((l) => l.ifname), ['lo']);
    await lab.startAgent();
    assert.equal((await endpoints()).some((e) => e.pod === 'late'), false);
  });
});
