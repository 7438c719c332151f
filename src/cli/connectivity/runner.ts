/**
 * Runs the connectivity battery (battery.ts) on a running lab: deploys the test workloads in
 * their own namespace, then for each selected test applies its policies, runs its actions one by
 * one in the client pods' network namespaces (curl, as cilium-cli execs curl in its client pods),
 * removes its policies, and at the end removes the namespace — also after a failure or Ctrl-C.
 * Output follows cilium-cli: `[=] Test [name] [i/n]`, one `.` per passed action, and the summary
 * `✅ All N tests (M actions) successful` or `❌ k/N tests failed`, naming each failed test.
 */
import { callAgent } from '../../agent/api-client.ts';
import type { Resource } from '../../api/types.ts';
import { MembraneError } from '../../common/errors.ts';
import { netnsExecArgv } from '../../sys/net.ts';
import { run } from '../../sys/proc.ts';
import { findPodNetns } from '../commands/exec.ts';
import { battery, selectTests, workloads, type Action, type ConnTest, type Expect } from './battery.ts';

export interface RunnerOptions {
  lab: string;
  /** agent sockets, node1 first */
  sockets: string[];
  namespace: string;
  filters: string[];
  out: (s: string) => void;
  /** ms one probe may take */
  probeTimeoutMs?: number;
}

export interface Outcome { got: Expect | 'error'; detail: string }

/** One probe: curl from the pod's namespace; 2xx success, 403 (the L7 proxy's denial) http-403, no answer drop. */
async function probe(lab: string, ns: string, a: Action, timeoutMs: number): Promise<Outcome> {
  const netns = await findPodNetns(lab, ns, a.from);
  const secs = String(Math.max(1, Math.round(timeoutMs / 1000)));
  const argv = netnsExecArgv(netns, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--connect-timeout', secs, '--max-time', secs, a.url]);
  const r = await run(argv[0]!, argv.slice(1), { timeoutMs: timeoutMs + 5000 });
  const code = r.stdout.trim();
  if (r.code === 0 && /^2\d\d$/.test(code)) return { got: 'success', detail: `HTTP ${code}` };
  if (r.code === 0 && code === '403') return { got: 'http-403', detail: 'HTTP 403' };
  if (r.code === 0) return { got: 'error', detail: `HTTP ${code}` };
  return { got: 'drop', detail: `curl exit ${r.code}${code && code !== '000' ? ` HTTP ${code}` : ''}` };
}

async function settleAll(sockets: string[]): Promise<void> {
  for (const s of sockets) await callAgent(s, 'POST', '/v1/settle', {});
}

async function waitPods(socket: string, ns: string, want: number): Promise<Record<string, string>> {
  const deadline = Date.now() + 180_000;
  let ips: Record<string, string> = {};
  while (Date.now() < deadline) {
    const { items } = await callAgent<{ items: { metadata: { name: string }; status?: { podIP?: string; ready?: string } }[] }>(socket, 'GET', `/v1/resources?kind=Pod&namespace=${ns}`);
    ips = Object.fromEntries(items.filter((p) => p.status?.podIP && p.status.ready === '1/1').map((p) => [p.metadata.name, p.status!.podIP!]));
    if (Object.keys(ips).length >= want) return ips;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new MembraneError('CONNECTIVITY_DEPLOY_TIMEOUT', `the test pods in ${ns} did not all become ready in 180 s (ready: ${Object.keys(ips).join(', ') || 'none'})`, { hint: '`membrane get pods -n ' + ns + '` and `membrane status` show why' });
}

export async function runConnectivityTest(o: RunnerOptions): Promise<number> {
  const { out, namespace: ns } = o;
  const socket = o.sockets[0]!;
  const multiNode = o.sockets.length > 1;
  const timeoutMs = o.probeTimeoutMs ?? 4000;
  const objs = workloads(ns, multiNode) as Resource[];
  out(`ℹ️  Lab ${o.lab}: ${o.sockets.length} node(s), test namespace ${ns}`);
  out('⌛ Deploying test workloads (client, client2, echo-same-node' + (multiNode ? ', echo-other-node' : '') + ')...');
  let applied: object[] = [];
  const cleanup = async () => {
    if (applied.length) await callAgent(socket, 'POST', '/v1/delete', { resources: applied }).catch(() => {});
    applied = [];
    await callAgent(socket, 'POST', '/v1/delete', { resources: objs.slice().reverse() }).catch(() => {});
    await settleAll(o.sockets).catch(() => {});
  };
  const onSignal = () => { void cleanup().finally(() => process.exit(130)); };
  process.once('SIGINT', onSignal);
  try {
    await callAgent(socket, 'POST', '/v1/apply', { resources: objs, dryRun: false });
    await settleAll(o.sockets);
    const pods = await waitPods(socket, ns, objs.filter((r) => r.kind === 'Pod').length);
    const echoIps = Object.fromEntries(Object.entries(pods).filter(([n]) => n.startsWith('echo-')));
    const tests = selectTests(battery({ namespace: ns, echoIps, multiNode }), o.filters);
    if (!tests.length) throw new MembraneError('CONNECTIVITY_NO_TESTS', `no test matches --test ${o.filters.join(',')}`, { hint: `tests: ${battery({ namespace: ns, echoIps, multiNode }).map((t) => t.name).join(', ')}` });
    const total = tests.reduce((n, t) => n + t.actions.length, 0);
    out(`🏃 Running ${tests.length} tests (${total} actions)...`);
    const failed: { test: ConnTest; actions: { a: Action; o: Outcome }[] }[] = [];
    let failedActions = 0;
    for (const [i, t] of tests.entries()) {
      out(`[=] Test [${t.name}] [${i + 1}/${tests.length}]`);
      applied = t.policies;
      if (applied.length) {
        await callAgent(socket, 'POST', '/v1/apply', { resources: applied, dryRun: false });
        await settleAll(o.sockets);
      }
      const bad: { a: Action; o: Outcome }[] = [];
      let line = '';
      for (const a of t.actions) {
        const r = await probe(o.lab, ns, a, timeoutMs);
        if (r.got === a.expect) line += '.';
        else {
          line += '❌';
          bad.push({ a, o: r });
        }
      }
      out(line);
      for (const b of bad) out(`  ❌ ${t.name}/${b.a.name}: ${ns}/${b.a.from} -> ${b.a.peer}: expected ${b.a.expect}, got ${b.o.got} (${b.o.detail})`);
      if (applied.length) {
        await callAgent(socket, 'POST', '/v1/delete', { resources: applied });
        await settleAll(o.sockets);
      }
      applied = [];
      if (bad.length) { failed.push({ test: t, actions: bad }); failedActions += bad.length; }
    }
    out('');
    out('📋 Test Report');
    if (!failed.length) {
      out(`✅ All ${tests.length} tests (${total} actions) successful, 0 tests skipped.`);
      return 0;
    }
    out(`❌ ${failed.length}/${tests.length} tests failed (${failedActions}/${total} actions), 0 tests skipped`);
    for (const f of failed) {
      out(`Test [${f.test.name}]:`);
      for (const b of f.actions) out(`  ❌ ${f.test.name}/${b.a.name}: ${ns}/${b.a.from} -> ${b.a.peer} (expected ${b.a.expect}, got ${b.o.got})`);
    }
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    out('🧹 Cleaning up the test namespace...');
    await cleanup();
  }
}
