import { test } from 'node:test';
import assert from 'node:assert/strict';
import { until } from '../../support/until.ts';

test('until: returns the first truthy value, sync or async, after falsy ones and thrown errors', async () => {
  let n = 0;
  assert.equal(await until('the third call', () => (++n >= 3 ? n : undefined), 2000), 3);
  let m = 0;
  const v = await until('an async value after an error', async () => {
    m++;
    if (m === 1) throw new Error('not yet');
    return m === 2 ? '' : { m };
  }, 2000);
  assert.deepEqual(v, { m: 3 });
});

test('until: times out with what it waited for and the last error', async () => {
  const start = Date.now();
  await assert.rejects(until('nothing', () => false, 100), { message: 'timed out waiting for nothing' });
  assert.ok(Date.now() - start >= 100);
  await assert.rejects(until('a broken check', () => { throw new Error('boom'); }, 100), { message: 'timed out waiting for a broken check: boom' });
});
