/**
 * The timerfd tick timer (src/sys/tick-timer.ts): one tick per arm, finer than a millisecond,
 * re-armed from its own tick, never a tick after close, nothing left open.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { liveTickTimers, tickTimer } from '../../../src/sys/tick-timer.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('one tick per arm, about the armed time later; re-armed from its own tick', async () => {
  const ticks: number[] = [];
  const t0 = performance.now();
  let again = 3;
  const t = tickTimer(() => { ticks.push(performance.now() - t0); if (--again > 0) timer.arm(200); });
  assert.notEqual(typeof t, 'string', String(t));
  const timer = t as Exclude<typeof t, string>;
  timer.arm(300);
  await sleep(60);
  assert.equal(ticks.length, 3, `three ticks (the first armed, two re-armed from a tick): ${ticks.map((x) => x.toFixed(2)).join(', ')}`);
  assert.ok(ticks[0]! >= 0.29, `the first tick ${ticks[0]!.toFixed(3)} ms after arming 300 µs`);
  timer.close();
  await sleep(10);
  assert.equal(liveTickTimers(), 0);
});

test('attacker: closed before it fires, or armed after close: never ticks; double close is harmless', async () => {
  let ticks = 0;
  const t = tickTimer(() => { ticks++; });
  assert.notEqual(typeof t, 'string');
  const timer = t as Exclude<typeof t, string>;
  timer.arm(2000);
  timer.close();
  timer.arm(100);
  timer.close();
  await sleep(20);
  assert.equal(ticks, 0);
  assert.equal(liveTickTimers(), 0);
});
