import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseGoDuration, parseHubbleTime } from '../../../src/hubble/time.ts';

const NOW = 1_735_830_245_000_000_000n; // 2025-01-02T15:04:05Z
const iso = (v: string) => {
  const t = parseHubbleTime(v, NOW);
  return t ? `${new Date(Number(t.seconds) * 1000).toISOString().slice(0, 19)}.${String(t.nanos).padStart(9, '0')}` : 'refused';
};

test('durations: Go syntax, before now', () => {
  const cases: [string, bigint | undefined][] = [
    ['5m', 300_000_000_000n], ['1h43m', 6_180_000_000_000n], ['1.5h', 5_400_000_000_000n], ['.5s', 500_000_000n],
    ['-2m', -120_000_000_000n], ['0', 0n], ['300ms', 300_000_000n], ['2µs', 2000n], ['1h5', undefined], ['5', undefined],
    ['', undefined], ['5sec', undefined], ['m', undefined], ['.s', undefined],
  ];
  for (const [v, want] of cases) assert.equal(parseGoDuration(v), want, v);
  assert.equal(iso('5m'), '2025-01-02T14:59:05.000000000');
  assert.equal(iso('-1s'), '2025-01-02T15:04:06.000000000');
});

test('absolute times: hubble\'s layouts, exact to the nanosecond, offsets applied', () => {
  const cases: [string, string][] = [
    ['2025-01-02', '2025-01-02T00:00:00.000000000'],
    ['2025-01-02T15Z', '2025-01-02T15:00:00.000000000'],
    ['2025-01-02T15:04+02:00', '2025-01-02T13:04:00.000000000'],
    ['2025-01-02T15:04:05Z', '2025-01-02T15:04:05.000000000'],
    ['2025-01-02T15:04:05.123456789Z', '2025-01-02T15:04:05.123456789'],
    ['2025-01-02T15:04:05.1234567891234Z', '2025-01-02T15:04:05.123456789'],
    ['2025-01-02T15:04:05,5-01:30', '2025-01-02T16:34:05.500000000'],
    ['Thu, 02 Jan 2025 15:04:05 +0100', '2025-01-02T14:04:05.000000000'],
  ];
  for (const [v, want] of cases) assert.equal(iso(v), want, v);
});

test('refused as hubble refuses: StampMilli has no year, impossible dates, garbage', () => {
  for (const v of ['Jan  2 15:04:05.000', 'Jan 2 15:04:05', '2025-02-30', '2025-13-01', '2025-01-02T24:00:00Z', '2025-01-02 15:04:05', '2025-1-2', 'yesterday', '2025-01-02T15:04:05']) {
    assert.equal(parseHubbleTime(v, NOW), undefined, v);
  }
});

test('property: every RFC3339Nano time printed in UTC reads back to the same instant', () => {
  fc.assert(fc.property(fc.integer({ min: -62135596800, max: 253402300799 }), fc.integer({ min: 0, max: 999_999_999 }), (sec, nanos) => {
    const d = new Date(sec * 1000).toISOString().slice(0, 19);
    const frac = nanos ? `.${String(nanos).padStart(9, '0').replace(/0+$/, '')}` : '';
    const t = parseHubbleTime(`${d}${frac}Z`, NOW);
    assert.ok(t);
    assert.equal(t.seconds, BigInt(sec));
    assert.equal(t.nanos, nanos);
  }));
});
