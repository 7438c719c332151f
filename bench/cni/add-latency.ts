/**
 * ADD latency of membrane-cni: from the runtime's exec of the plugin to its result, which it
 * gives only once the container's endpoint is ready — its network made and its policy in the
 * datapath ("container start to policy in force"). A real host-mode agent in a stand-in host
 * namespace, a CNP selecting the containers, each ADD into a fresh namespace as a runtime makes.
 *
 * Baselines from the same run: the reference `bridge` plugin (containernetworking-plugins, Go,
 * host-local IPAM, no policy) doing ADD the same way, and membrane-cni's VERSION (process start
 * only). Bounded: ROUNDS ADDs and DELs of each.
 *
 * Wall time on a shared machine is mostly waiting for a CPU, so each ADD's CPU time is measured
 * too, from /proc: the plugin's (the bench's reaped children: the plugin alone runs in between)
 * and the agent's (its process and the `ip` commands it waited for).
 *
 *   bin/node bench/cni/add-latency.ts [rounds=40] [--append]   (--append: into bench/RESULTS.md)
 */
import { execFile } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { reportResults } from '../support.ts';
import { CNI_PLUGIN, HostModeLab } from '../../test/integration/support/host-mode.ts';

const APPEND = process.argv.includes('--append');
const ROUNDS = Math.min(Number(process.argv.slice(2).find((a) => !a.startsWith('--')) ?? 40), 200);
const lab = new HostModeLab(`cnib${process.pid}`, '10.244.214.0/24');

/** CPU ms of a process from /proc/<pid>/stat: utime+stime, plus its reaped children's when asked */
function cpuMs(pid: number | 'self', children: 'only' | 'with' | 'without'): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const v = f.slice(f.lastIndexOf(')') + 2).split(' ').map(Number);
  // fields 14-17 of stat(5): utime stime cutime cstime; v[0] is field 3
  const own = v[11]! + v[12]!, kids = v[13]! + v[14]!;
  const ticks = children === 'only' ? kids : children === 'with' ? own + kids : own;
  return (ticks * 1000) / 100;
}

const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!; };
const fmt = (n: number) => `${n.toFixed(1)} ms`;

function timed(cmd: string, env: Record<string, string>, stdin: string): Promise<{ ms: number; code: number; out: string }> {
  const t0 = performance.now();
  return new Promise((res) => {
    const c = execFile(cmd, [], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: 60_000 }, (err, out) => res({ ms: performance.now() - t0, code: err ? 1 : 0, out }));
    c.stdin!.end(stdin);
  });
}

try {
  await lab.startAgent();
  await lab.apply([{
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'bench', namespace: 'default' },
    spec: { endpointSelector: { matchLabels: { app: 'bench' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] },
  }]);
  const addPluginCpu: number[] = [], addAgentCpu: number[] = [], versionCpu: number[] = [];
  const agentPid = lab.agent!.pid!;
  const add: number[] = [], del: number[] = [], version: number[] = [], bridgeAdd: number[] = [], bridgeDel: number[] = [];
  // the reference plugin, in the same stand-in host namespace (its bridge lives there)
  const dir = await lab.dir;
  const bridgeConf = JSON.stringify({ cniVersion: '1.0.0', name: 'benchbr', type: 'bridge', bridge: 'cnibench0', isGateway: true, ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.215.0/24' }]], dataDir: join(dir, 'host-local') } });
  await mkdir(join(dir, 'host-local'), { recursive: true });
  for (let i = 0; i < ROUNDS; i++) {
    const c0 = cpuMs('self', 'only');
    const v = await timed(CNI_PLUGIN, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
    version.push(v.ms);
    versionCpu.push(cpuMs('self', 'only') - c0);
    const netns = await lab.containerNetns();
    const id = `bench${i}`.padEnd(16, '0');
    const p0 = cpuMs('self', 'only'), g0 = cpuMs(agentPid, 'with');
    const a = await lab.cni({ command: 'ADD', containerId: id, netns: `/run/netns/${netns}`, ifname: 'eth0', args: `K8S_POD_NAME=bench-${i};MEMBRANE_LABELS=app=bench` });
    if (a.code !== 0) throw new Error(`ADD ${i}: ${a.raw}`);
    add.push(a.ms);
    addPluginCpu.push(cpuMs('self', 'only') - p0);
    addAgentCpu.push(cpuMs(agentPid, 'with') - g0);
    const d = await lab.cni({ command: 'DEL', containerId: id, netns: `/run/netns/${netns}`, ifname: 'eth0' });
    if (d.code !== 0) throw new Error(`DEL ${i}: ${d.raw}`);
    del.push(d.ms);
    // bridge: run in the host namespace through nsenter (a few ms on top of its own time)
    const benv = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: id, CNI_NETNS: `/run/netns/${netns}`, CNI_IFNAME: 'eth1', CNI_PATH: '/usr/lib/cni' };
    const t0 = performance.now();
    const br = await new Promise<number>((res) => {
      const c = execFile('nsenter', [`--net=/run/netns/${lab.hostNetns}`, '/usr/lib/cni/bridge'], { env: { PATH: process.env.PATH ?? '', ...benv } }, (err) => res(err ? 1 : 0));
      c.stdin!.end(bridgeConf);
    });
    if (br !== 0) throw new Error(`bridge ADD ${i} failed`);
    bridgeAdd.push(performance.now() - t0);
    const t1 = performance.now();
    await new Promise<void>((res) => {
      const c = execFile('nsenter', [`--net=/run/netns/${lab.hostNetns}`, '/usr/lib/cni/bridge'], { env: { PATH: process.env.PATH ?? '', ...benv, CNI_COMMAND: 'DEL' } }, () => res());
      c.stdin!.end(bridgeConf);
    });
    bridgeDel.push(performance.now() - t1);
    await lab.sh('ip', ['netns', 'del', netns]);
    lab.containers.delete(netns);
  }
  const rows = [
    ['membrane-cni ADD (to policy in force)', add],
    ['membrane-cni DEL', del],
    ['membrane-cni VERSION (process start only)', version],
    ['bridge + host-local ADD (reference, no policy)', bridgeAdd],
    ['bridge + host-local DEL', bridgeDel],
  ] as const;
  const lines: string[] = [];
  const log = (t: string) => lines.push(t);
  // the heading alone first: reportResults replaces the section it names
  log('## cni');
  log(`\nCommand: \`bin/node bench/cni/add-latency.ts ${ROUNDS}${APPEND ? ' --append' : ''}\`\n\nRun ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, load average ${(await import('node:os')).loadavg()[0]!.toFixed(1)} at the end, ${ROUNDS} rounds each.\n`);
  log('| measure | p50 | p99 | max |\n|---|---|---|---|');
  for (const [name, xs] of rows) log(`| ${name} | ${fmt(pct(xs, 50))} | ${fmt(pct(xs, 99))} | ${fmt(Math.max(...xs))} |`);
  log('\nCPU time (ms, /proc, 10 ms ticks): what the work costs, whatever the load\n\n| CPU of | p50 | p99 |\n|---|---|---|');
  for (const [name, xs] of [['ADD: the plugin process', addPluginCpu], ['ADD: the agent (with the `ip` commands it ran)', addAgentCpu], ['VERSION: the plugin process', versionCpu]] as const) {
    log(`| ${name} | ${pct(xs, 50).toFixed(0)} | ${pct(xs, 99).toFixed(0)} |`);
  }
  log(`\nmembrane-cni ADD p50 / bridge ADD p50: ${(pct(add, 50) / pct(bridgeAdd, 50)).toFixed(2)}×; goal: ADD p99 ≤ 200 ms: ${pct(add, 99) <= 200 ? 'ok' : 'MISSED'}`);
  log('');
  reportResults(lines, APPEND);
  await rm(join(dir, 'host-local'), { recursive: true, force: true });
} finally {
  await lab.cleanup();
}
