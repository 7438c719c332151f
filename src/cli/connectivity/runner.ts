/**
 * Runs the connectivity battery (battery.ts): starts the test workloads in their own namespace
 * (lab pods or real containers: workloads.ts), then for each selected test applies its policies
 * through the agent, runs its actions one by one in the client workloads' network namespaces
 * (curl, as cilium-cli execs curl in its client pods), removes its policies, and at the end
 * removes the workloads and the namespace — also after a failure or Ctrl-C.
 * Output follows cilium-cli: `[=] Test [name] [i/n]`, one `.` per passed action, and the summary
 * `✅ All N tests (M actions) successful, K tests skipped` or `❌ k/N tests failed`, naming each
 * failed test; with `verbose`, one `[.] Action [test/action: from -> peer]` line per action.
 */
import { callAgent } from '../../agent/api-client.ts';
import { MembraneError } from '../../common/errors.ts';
import { applicable, battery, selectTests, workloadSpecs, type Action, type ConnTest, type Expect } from './battery.ts';
import type { TestWorkloads } from './workloads.ts';

export interface RunnerOptions {
  /** agent sockets, node1 first: policies go to the first, every one is settled */
  sockets: string[];
  workloads: TestWorkloads;
  namespace: string;
  filters: string[];
  out: (s: string) => void;
  /** ms one probe may take */
  probeTimeoutMs?: number;
  /** one line per action with its outcome (cilium-cli's -v), beside the dots */
  verbose?: boolean;
}

export interface Outcome { got: Expect | 'error'; detail: string }

/** One probe: curl from the workload's namespace; 2xx success, 403 (the L7 proxy's denial) http-403, no answer drop. */
async function probe(w: TestWorkloads, ns: string, a: Action, timeoutMs: number): Promise<Outcome> {
  const secs = String(Math.max(1, Math.round(timeoutMs / 1000)));
  const r = await w.exec(ns, a.from, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--connect-timeout', secs, '--max-time', secs, a.url], timeoutMs + 5000);
  const code = r.stdout.trim();
  if (r.code === 0 && /^2\d\d$/.test(code)) return { got: 'success', detail: `HTTP ${code}` };
  if (r.code === 0 && code === '403') return { got: 'http-403', detail: 'HTTP 403' };
  if (r.code === 0) return { got: 'error', detail: `HTTP ${code}` };
  return { got: 'drop', detail: `curl exit ${r.code}${code && code !== '000' ? ` HTTP ${code}` : ''}` };
}

async function settleAll(sockets: string[]): Promise<void> {
  for (const s of sockets) await callAgent(s, 'POST', '/v1/settle', {});
}

export async function runConnectivityTest(o: RunnerOptions): Promise<number> {
  const { out, namespace: ns, workloads: w } = o;
  const socket = o.sockets[0]!;
  const multiNode = o.sockets.length > 1;
  const timeoutMs = o.probeTimeoutMs ?? 4000;
  const specs = workloadSpecs(multiNode);
  out(`ℹ️  ${w.describe}, test namespace ${ns}`);
  out(`⌛ Deploying test workloads (${specs.map((s) => s.name).join(', ')})...`);
  let applied: object[] = [];
  const cleanup = async () => {
    if (applied.length) await callAgent(socket, 'POST', '/v1/delete', { resources: applied }).catch(() => {});
    applied = [];
    await w.remove(ns).catch(() => {});
    // the namespace: made by the deploy (lab) or by the first ADD into it (host mode)
    await callAgent(socket, 'POST', '/v1/delete', { resources: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } }] }).catch(() => {});
    await settleAll(o.sockets).catch(() => {});
  };
  const onSignal = () => { void cleanup().finally(() => process.exit(130)); };
  process.once('SIGINT', onSignal);
  try {
    const echoIps = await w.deploy(ns, specs);
    const all = battery({ namespace: ns, echoIps, multiNode });
    const selected = selectTests(all, o.filters);
    if (!selected.length) throw new MembraneError('CONNECTIVITY_NO_TESTS', `no test matches --test ${o.filters.join(',')}`, { hint: `tests: ${all.map((t) => t.name).join(', ')}` });
    const { run: tests, skipped } = applicable(selected, w.features);
    const total = tests.reduce((n, t) => n + t.actions.length, 0);
    for (const t of skipped) out(`[-] Skipping test [${t.name}]: needs ${t.needs ?? 'what this environment lacks'} (${w.describe})`);
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
        const r = await probe(w, ns, a, timeoutMs);
        if (o.verbose) out(`  [${r.got === a.expect ? '.' : 'x'}] Action [${t.name}/${a.name}: ${ns}/${a.from} -> ${a.peer}]: expected ${a.expect}, got ${r.got}`);
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
      out(`✅ All ${tests.length} tests (${total} actions) successful, ${skipped.length} tests skipped.`);
      return 0;
    }
    out(`❌ ${failed.length}/${tests.length} tests failed (${failedActions}/${total} actions), ${skipped.length} tests skipped`);
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
