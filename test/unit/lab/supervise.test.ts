/**
 * Supervision with real processes: a killed program is restarted (new pid) and its exit recorded
 * with why; quick successive failures back off; stop() ends the program and restarts nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backoffDelay, describeExit, readSupervisorState, supervise, supervisorFiles } from '../../../src/sys/supervise.ts';
import { until } from '../../support/until.ts';

const NODE = process.execPath;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

test('backoff: doubles from the base, capped; exits described by code or signal', () => {
  assert.deepEqual([0, 1, 2, 3, 10, 50].map((n) => backoffDelay(n)), [100, 200, 400, 800, 10_000, 10_000]);
  assert.equal(describeExit(null, 'SIGKILL'), 'killed by SIGKILL');
  assert.equal(describeExit(1, null), 'exited with code 1');
  assert.equal(describeExit(0, null), 'exited cleanly (code 0)');
});

test('kill -9 of the program: restarted with a new pid, the exit recorded; stop() ends it for good', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mbr-sup-'));
  const files = supervisorFiles(dir);
  const logs: string[] = [];
  const sup = supervise({
    name: 'sleeper', argv: [NODE, '-e', 'console.log("up", process.pid); setInterval(() => {}, 1000)'], logFile: join(dir, 'p.log'), stateFile: files.state,
    log: (m) => logs.push(m),
  });
  try {
    const first = await until('the supervisor writes the child pid', () => readSupervisorState(files.state)?.pid, 10_000);
    assert.ok(alive(first));
    const ups = () => readFileSync(join(dir, 'p.log'), 'utf8').match(/^up /gm)?.length ?? 0;
    await until('the first child starts', () => ups() >= 1 || undefined, 10_000);
    process.kill(first, 'SIGKILL');
    const second = await until('a new child pid', () => { const p = readSupervisorState(files.state)?.pid; return p && p !== first ? p : undefined; }, 5000);
    assert.ok(alive(second));
    const st = readSupervisorState(files.state)!;
    assert.equal(st.restarts, 1);
    assert.equal(st.lastExit?.pid, first);
    assert.equal(st.lastExit?.signal, 'SIGKILL');
    assert.equal(st.lastExit?.reason, 'killed by SIGKILL');
    assert.match(logs.join('\n'), /sleeper killed by SIGKILL after [\d.]+ s: restarting in 100 ms/);
    await until('the second child starts', () => ups() >= 2 || undefined, 10_000);
    await sup.stop(2000);
    assert.ok(!alive(second), 'stop() ended the program');
    await sleep(400);
    const after = readSupervisorState(files.state)!;
    assert.equal(after.pid, undefined, 'nothing restarted after stop()');
    assert.equal(after.restarts, 1);
  } finally {
    await sup.stop(500);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a program that keeps failing at once is restarted with growing delays (never a tight loop)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mbr-sup-'));
  const files = supervisorFiles(dir);
  const delays: number[] = [];
  const sup = supervise({
    name: 'crasher', argv: [NODE, '-e', 'process.exit(3)'], logFile: join(dir, 'p.log'), stateFile: files.state,
    log: (_m, f) => { delays.push(f.restartInMs as number); },
  });
  try {
    await until('four restart delays', () => delays.length >= 4 || undefined, 20_000);
    assert.deepEqual(delays.slice(0, 4), [100, 200, 400, 800]);
    assert.equal(readSupervisorState(files.state)?.lastExit?.reason, 'exited with code 3');
  } finally {
    await sup.stop(500);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('standby: a loaded spare is promoted on a kill (it was waiting for "go"), and a new spare is loaded', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mbr-sup-'));
  const files = supervisorFiles(dir);
  const prog = `const spare = process.argv.includes('--spare');
console.log((spare ? 'spare ' : 'up ') + process.pid);
if (spare) process.stdin.once('data', () => { console.log('go ' + process.pid); process.stdin.pause(); });
setInterval(() => {}, 1000);`;
  const sup = supervise({
    name: 'spared', argv: [NODE, '-e', prog, '--'], logFile: join(dir, 'p.log'), stateFile: files.state,
    log: () => {}, standby: { flag: '--spare', delayMs: 100 },
  });
  const log = () => readFileSync(join(dir, 'p.log'), 'utf8');
  try {
    const first = await until('the supervisor writes the child pid', () => readSupervisorState(files.state)?.pid, 10_000);
    await until('the cold start', () => /^up /m.test(log()) || undefined, 10_000); // the cold start printed before it is killed
    const spared = await until('a spare', () => /^spare (\d+)$/m.exec(log())?.[1], 10_000);
    process.kill(first, 'SIGKILL');
    const second = await until('a new child pid', () => { const p = readSupervisorState(files.state)?.pid; return p && p !== first ? p : undefined; }, 5000);
    assert.equal(second, Number(spared), 'the spare became the program');
    await until('the spare takes over', () => log().includes(`go ${spared}`) || undefined, 10_000);
    assert.ok(alive(second));
    // and another spare is loaded for the next time
    await until('a second spare', () => (log().match(/^spare /gm)?.length ?? 0) >= 2 || undefined, 10_000);
    assert.equal(log().match(/^up /gm)?.length, 1, 'no cold start was needed');
  } finally {
    await sup.stop(1000);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('what the program ran for is gone: no restart, the supervision ends with the reason', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mbr-sup-'));
  const files = supervisorFiles(dir);
  const logs: string[] = [];
  let ended = '';
  let removed = false;
  const sup = supervise({
    name: 'orphan', argv: [NODE, '-e', 'setInterval(() => {}, 1000)'], logFile: join(dir, 'p.log'), stateFile: files.state,
    log: (m) => logs.push(m), gone: () => (removed ? 'its lab was taken down' : undefined), onEnd: (r) => { ended = r; },
  });
  try {
    const first = await until('the supervisor writes the child pid', () => readSupervisorState(files.state)?.pid, 10_000);
    removed = true;
    process.kill(first, 'SIGKILL');
    await until('the supervisor ends', () => ended || undefined, 10_000);
    assert.equal(ended, 'its lab was taken down');
    await sleep(400);
    const st = readSupervisorState(files.state)!;
    assert.equal(st.pid, undefined);
    assert.equal(st.restarts, 0);
    assert.match(logs.join('\n'), /orphan killed by SIGKILL: not restarted \(its lab was taken down\)/);
  } finally {
    await sup.stop(500);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('onFailureOnly: a clean exit (stopped on purpose) ends the supervision; positive control: a kill is restarted', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mbr-sup-'));
  const files = supervisorFiles(dir);
  let ended = '';
  const sup = supervise({
    name: 'polite', argv: [NODE, '-e', 'process.on("SIGTERM", () => process.exit(0)); console.log("ready", process.pid); setInterval(() => {}, 1000)'], logFile: join(dir, 'p.log'), stateFile: files.state,
    log: () => {}, onFailureOnly: true, onEnd: (r) => { ended = r; },
  });
  try {
    const first = await until('the supervisor writes the child pid', () => readSupervisorState(files.state)?.pid, 10_000);
    await sleep(300);
    process.kill(first, 'SIGKILL');
    const second = await until('a new child pid', () => { const p = readSupervisorState(files.state)?.pid; return p && p !== first ? p : undefined; }, 5000);
    // SIGTERM before the child has set its handler would be a kill, not a clean exit (node starts slowly on a busy machine)
    await until('the new child has its SIGTERM handler', () => readFileSync(join(dir, 'p.log'), 'utf8').includes(`ready ${second}`) || undefined, 10_000);
    process.kill(second, 'SIGTERM');
    await until('the supervisor ends', () => ended || undefined, 10_000);
    assert.equal(ended, 'it exited cleanly (stopped on purpose)');
    const st = readSupervisorState(files.state)!;
    assert.equal(st.restarts, 1);
    assert.equal(st.lastExit?.reason, 'exited cleanly (code 0)');
  } finally {
    await sup.stop(500);
    rmSync(dir, { recursive: true, force: true });
  }
});
