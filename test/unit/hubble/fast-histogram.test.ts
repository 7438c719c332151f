import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { fastHistogram, OBSERVE_SLOT, promHistogramSeries } from '../../../src/common/fast-counter.ts';
import { createHubbleMetrics } from '../../../src/hubble/metrics/index.ts';
import { DEFAULT_BUCKETS } from '../../../src/hubble/metrics/http.ts';

// The fast histogram must expose exactly what prom-client's own histogram does for the same observations.
test('fastHistogram renders as prom-client Histogram for any observations', async () => {
  const obs = fc.array(fc.tuple(fc.oneof(fc.double({ min: 0, max: 20, noNaN: true }), fc.constantFrom(...DEFAULT_BUCKETS)), fc.constantFrom('GET', 'POST'), fc.constantFrom('client', 'server')), { maxLength: 60 });
  await fc.assert(fc.asyncProperty(obs, async (list) => {
    const a = new Registry(), b = new Registry();
    const ref = new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['method', 'reporter'], buckets: DEFAULT_BUCKETS, registers: [a] });
    const fast = fastHistogram({ name: 'h_seconds', help: 'h', labelNames: ['method', 'reporter'], buckets: DEFAULT_BUCKETS, registers: [b] });
    const c = new Registry();
    const slot = fastHistogram({ name: 'h_seconds', help: 'h', labelNames: ['method', 'reporter'], buckets: DEFAULT_BUCKETS, registers: [c] });
    for (const [v, m, r] of list) {
      ref.labels(m, r).observe(v);
      fast.observe(v, [m, r]);
      OBSERVE_SLOT[0] = v;
      slot.observeSlot([m, r]);
    }
    assert.equal(await b.metrics(), await a.metrics());
    assert.equal(await c.metrics(), await a.metrics(), 'through the slot');
  }), { numRuns: 60 });
});

test('http metrics: a deleted pod\'s duration series go, the others stay', async () => {
  const m = createHubbleMetrics('http:sourceContext=pod');
  const flow = (pod: string) => ({
    source: { namespace: 'default', podName: pod }, trafficDirection: 2,
    l7: { type: 2, latencyNs: 3_000_000n, record: { case: 'http', value: { method: 'GET', protocol: 'HTTP/1.1', code: 200 } } },
  }) as never;
  m.process(flow('a'));
  m.process(flow('b'));
  let text = await m.registry.metrics();
  assert.match(text, /hubble_http_request_duration_seconds_bucket\{le="0.005",source="default\/a",method="GET",reporter="client"\} 1/);
  assert.match(text, /hubble_http_responses_total\{source="default\/b",method="GET",protocol="HTTP\/1.1",status="200",reporter="client"\} 1/);
  // the two counters and the histogram of pod a
  assert.equal(await m.forgetPod('default', 'a'), 2);
  text = await m.registry.metrics();
  assert.doesNotMatch(text, /source="default\/a"/);
  assert.match(text, /hubble_http_request_duration_seconds_count\{source="default\/b",method="GET",reporter="client"\} 1/);
});

test('fastHistogram refuses a prom-client Histogram without the series map it fills (coded error, not empty histograms)', () => {
  // positive control: prom-client's own Histogram has it
  const h = new Histogram({ name: 'x_seconds', help: 'x', labelNames: ['a'], registers: [] });
  assert.equal(typeof promHistogramSeries(h, 'x_seconds'), 'object');
  // a Histogram whose series live elsewhere (another prom-client version)
  const other = Object.create(h) as object;
  Object.defineProperty(other, 'hashMap', { value: undefined });
  assert.throws(() => promHistogramSeries(other, 'x_seconds'), (e: Error & { code?: string }) => e.code === 'METRICS_HISTOGRAM_SHAPE' && /x_seconds/.test(e.message));
  assert.throws(() => promHistogramSeries({ hashMap: {} }, 'y'), (e: Error & { code?: string }) => e.code === 'METRICS_HISTOGRAM_SHAPE');
});
