/**
 * The budget ledger: fixed windows, in-flight reservations, charges, and the state file that
 * carries counts across a restart (written atomically, expired windows dropped).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AIBudgetLedger } from '../../../../src/proxy/ai/budget.ts';
import { parseWindow } from '../../../../src/policy/ai.ts';
import { until } from '../../../support/until.ts';

const MIN = parseWindow('1m')!;
const DAY = parseWindow('1d')!;

test('fixed windows aligned to the epoch: counts reset at the boundary; reservations count until settled', () => {
  let now = Date.UTC(2025, 0, 1, 10, 0, 30);
  const l = new AIBudgetLedger({ now: () => now });
  const k = AIBudgetLedger.key('ns/p', 'tokens', MIN, 'k8s:app=a');
  assert.deepEqual(l.state(k, MIN), { used: 0, reserved: 0, windowEnd: Date.UTC(2025, 0, 1, 10, 1, 0) });
  const r = l.reserve([k], 500);
  assert.equal(l.state(k, MIN).reserved, 500);
  l.settle(r, [{ key: k, window: MIN }], 120);
  assert.deepEqual(l.state(k, MIN), { used: 120, reserved: 0, windowEnd: Date.UTC(2025, 0, 1, 10, 1, 0) });
  l.settle(r, [{ key: k, window: MIN }], 0); // settling twice releases nothing more
  assert.equal(l.state(k, MIN).reserved, 0);
  now = Date.UTC(2025, 0, 1, 10, 1, 0);
  assert.equal(l.state(k, MIN).used, 0, 'a new minute');
  const d = AIBudgetLedger.key('ns/p', 'tokens', DAY, 'k8s:app=a');
  l.settle(undefined, [{ key: d, window: DAY }], 7);
  assert.equal(l.state(d, DAY).windowEnd, Date.UTC(2025, 0, 2), 'a day window ends at UTC midnight');
  const q = AIBudgetLedger.key('ns/p', 'requests', MIN, 'k8s:app=a');
  l.countRequest([{ key: q, window: MIN }]);
  l.countRequest([{ key: q, window: MIN }]);
  assert.equal(l.state(q, MIN).used, 2);
});

test('reservations expire on their own (an exchange that never ends does not hold a budget forever)', () => {
  let now = 1_000_000;
  const l = new AIBudgetLedger({ now: () => now, reservationTtlMs: 5000 });
  l.reserve(['k'], 100);
  assert.equal(l.state('k', MIN).reserved, 100);
  now += 5001;
  assert.equal(l.state('k', MIN).reserved, 0);
});

test('state file: written atomically after changes and at stop, read back by a new ledger, expired windows dropped, garbage tolerated', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ai-ledger-'));
  try {
    const file = join(dir, 'nodes', 'node1', 'ai-budgets.json');
    let now = Date.UTC(2025, 0, 1, 10, 0, 30);
    const a = new AIBudgetLedger({ file, now: () => now, flushMs: 10 });
    await a.load();
    const day = AIBudgetLedger.key('ns/p', 'tokens', DAY, 'id');
    const min = AIBudgetLedger.key('ns/p', 'tokens', MIN, 'id');
    a.settle(undefined, [{ key: day, window: DAY }, { key: min, window: MIN }], 300);
    // the flush timer writes it (within 10 ms on an idle machine; a busy one is given time)
    const written = await until('the state file after a change', async () => JSON.parse(await readFile(file, 'utf8')) as { version: number; entries: Record<string, { n: number }> }, 10_000);
    assert.equal(written.version, 1);
    assert.equal(written.entries[day]!.n, 300);
    a.settle(undefined, [{ key: day, window: DAY }], 50);
    await a.stop();
    assert.deepEqual((await readdir(join(dir, 'nodes', 'node1'))).sort(), ['ai-budgets.json'], 'no temporary file left');
    now += 60_000; // the minute window has passed, the day has not
    const b = new AIBudgetLedger({ file, now: () => now });
    await b.load();
    assert.equal(b.state(day, DAY).used, 350);
    assert.equal(b.state(min, MIN).used, 0);
    assert.deepEqual(b.snapshot().map((s) => s.key), [day]);
    await writeFile(file, '{not json');
    const warnings: string[] = [];
    const c = new AIBudgetLedger({ file, now: () => now, logger: { warn: (_o, m) => warnings.push(String(m)) } });
    await c.load();
    assert.deepEqual(c.snapshot(), []);
    assert.deepEqual(warnings, ['AI budget state is not JSON; starting empty']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
