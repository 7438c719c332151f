import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildConfig, configEnv, settingsHelp, SETTINGS, withFlags } from '../../../src/common/config.ts';
import { MembraneError } from '../../../src/common/errors.ts';

test('config: defaults, then the environment, then flags', () => {
  const d = buildConfig();
  assert.equal(d.lab, 'mbr');
  assert.equal(d.stateDir, '/run/membrane/mbr');
  assert.equal(d.tofqdnsMaxIPsPerHostname, 50);
  assert.equal(d.dnsProxyHold, true);
  assert.equal(d.otlpEndpoint, undefined);
  assert.deepEqual([d.bpfEventsDefaultRateLimit, d.bpfEventsDefaultBurstLimit], [1000, 1000], 'the per-sender event budget');
  assert.equal(buildConfig({ env: { MEMBRANE_BPF_EVENTS_DEFAULT_RATE_LIMIT: '0' } }).bpfEventsDefaultRateLimit, 0, '0: no limit');
  assert.equal(d.bpfRunTimeStats, false, "the kernel's BPF run-time stats are off by default, as Cilium leaves them");
  assert.equal(buildConfig({ env: { MEMBRANE_BPF_RUN_TIME_STATS: 'true' } }).bpfRunTimeStats, true);
  assert.equal(buildConfig({ flags: { bpfRunTimeStats: true } }).bpfRunTimeStats, true);
  const e = buildConfig({ env: { MEMBRANE_LAB: 'x1', MEMBRANE_TOFQDNS_MIN_TTL: '30', MEMBRANE_DNS_PROXY_HOLD: '0', NO_COLOR: '' } });
  assert.equal(e.stateDir, '/run/membrane/x1', 'the state dir follows the lab name');
  assert.equal(e.tofqdnsMinTTL, 30);
  assert.equal(e.dnsProxyHold, false);
  assert.equal(e.noColor, false, 'NO_COLOR set to the empty string is unset (no-color.org)');
  const f = buildConfig({ env: { MEMBRANE_TOFQDNS_MIN_TTL: '30' }, flags: { tofqdnsMinTTL: '5', stateDir: '/tmp/s' } });
  assert.equal(f.tofqdnsMinTTL, 5);
  assert.equal(f.stateDir, '/tmp/s');
});

test('config: a bad value is a CONFIG_INVALID error naming the setting, its flag and variable', () => {
  const bad: [Record<string, string>, RegExp][] = [
    [{ MEMBRANE_TOFQDNS_MIN_TTL: '-1' }, /tofqdnsMinTTL \(--tofqdns-min-ttl \/ MEMBRANE_TOFQDNS_MIN_TTL\)/],
    [{ MEMBRANE_HUBBLE_METRICS_PORT: '70000' }, /hubbleMetricsPort/],
    [{ MEMBRANE_TOFQDNS_DNS_REJECT_RESPONSE_CODE: 'nxdomain' }, /refused or nameError/],
    [{ MEMBRANE_DNS_PROXY_HOLD: 'yes' }, /1 or 0/],
    [{ MEMBRANE_LOG_LEVEL: 'loud' }, /logLevel/],
    [{ MEMBRANE_LAB: 'a b' }, /lab/],
    [{ MEMBRANE_BPF_EVENTS_DEFAULT_BURST_LIMIT: '1e3' }, /bpfEventsDefaultBurstLimit/],
    [{ MEMBRANE_MONITOR_AGGREGATION: 'high' }, /monitorAggregation .*medium, max, maximum, low or lowest/],
    [{ MEMBRANE_MONITOR_AGGREGATION: '5' }, /monitorAggregation/],
    [{ MEMBRANE_MONITOR_AGGREGATION_INTERVAL: '0s' }, /monitorAggregationInterval/],
    [{ MEMBRANE_MONITOR_AGGREGATION_INTERVAL: '5m' }, /monitorAggregationInterval/],
  ];
  for (const [env, msg] of bad) {
    assert.throws(() => buildConfig({ env }), (e: unknown) => e instanceof MembraneError && e.code === 'CONFIG_INVALID' && msg.test(e.message) && !!e.hint, JSON.stringify(env));
  }
});

test("config: monitor aggregation takes Cilium's names and numbers, refuses none (not implemented) with a coded error", () => {
  assert.deepEqual([buildConfig().monitorAggregation, buildConfig().monitorAggregationInterval], ['medium', 5], "Cilium's defaults");
  for (const v of ['medium', 'MEDIUM', 'max', 'maximum', '3', '4']) assert.equal(buildConfig({ flags: { monitorAggregation: v } }).monitorAggregation, 'medium', v);
  for (const v of ['low', 'lowest', '1', '2']) assert.equal(buildConfig({ flags: { monitorAggregation: v } }).monitorAggregation, 'low', v);
  assert.equal(buildConfig({ env: { MEMBRANE_MONITOR_AGGREGATION_INTERVAL: '10s' } }).monitorAggregationInterval, 10);
  for (const v of ['none', 'disabled', '0']) {
    assert.throws(() => buildConfig({ flags: { monitorAggregation: v } }), (e: unknown) => e instanceof MembraneError && e.code === 'CONFIG_UNSUPPORTED' && /not implemented/.test(e.message) && /low/.test(e.hint ?? ''), v);
  }
});

test('config: a child process builds the same configuration from configEnv; withFlags changes only what it names', () => {
  const c = buildConfig({ env: { MEMBRANE_LAB: 'kid', MEMBRANE_OTLP_ENDPOINT: 'http://127.0.0.1:4318', NO_COLOR: '1' }, flags: { tofqdnsGcMs: 250 } });
  assert.deepEqual(buildConfig({ env: configEnv(c) }), c);
  // the OpenTelemetry SDK's variables ride along as given (the OTLP exporter judges them)
  const o = buildConfig({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SERVICE_NAME: 'x', OTHER: 'y', OTEL_EMPTY: '' } });
  assert.deepEqual(o.otel, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SERVICE_NAME: 'x' });
  assert.deepEqual(buildConfig({ env: configEnv(o) }), o);
  const w = withFlags(c, { logLevel: 'debug' });
  assert.deepEqual(w, { ...c, logLevel: 'debug' });
});

test('config: every setting is in the help text with its variable, flag and default', () => {
  const help = settingsHelp();
  for (const s of SETTINGS) {
    assert.ok(help.includes(s.env), s.env);
    if (s.scope !== 'cli') assert.ok(help.includes(s.flag), s.flag);
    assert.ok(help.includes(`default: ${s.default}`), s.name);
  }
  assert.equal(new Set(SETTINGS.map((s) => s.env)).size, SETTINGS.length);
  assert.equal(new Set(SETTINGS.map((s) => s.flag)).size, SETTINGS.length);
});

test('config: the README lists every setting with its variable, flag and default', async () => {
  const { readFile } = await import('node:fs/promises');
  const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
  for (const s of SETTINGS) {
    const row = readme.split('\n').find((l) => l.startsWith(`| \`${s.env}\` |`));
    assert.ok(row, `README row for ${s.env}`);
    assert.ok(row.includes(`\`${s.default.replace(/\|/g, '\\|')}\``), `${s.env}: default ${s.default}`);
    if (s.scope !== 'cli') assert.ok(row.includes(`\`${s.flag}\``), `${s.env}: flag ${s.flag}`);
  }
});

test("config: routing mode is Cilium's tunnel by default; native selectable; anything else refused", () => {
  assert.equal(buildConfig().routingMode, 'tunnel');
  assert.equal(buildConfig({ env: { MEMBRANE_ROUTING_MODE: 'native' } }).routingMode, 'native');
  assert.equal(buildConfig({ env: { MEMBRANE_ROUTING_MODE: 'native' }, flags: { routingMode: 'tunnel' } }).routingMode, 'tunnel', 'the flag wins');
  for (const bad of ['geneve', 'Tunnel', 'vxlan']) {
    assert.throws(() => buildConfig({ flags: { routingMode: bad } }), (e: unknown) => e instanceof MembraneError && e.code === 'CONFIG_INVALID' && /tunnel or native/.test(e.message));
  }
});

test('config: WireGuard with either routing mode (tunnel: VXLAN inside WireGuard; native)', () => {
  const t = buildConfig({ flags: { encryption: 'wireguard', encryptionStrict: true } });
  assert.equal(t.encryption, 'wireguard');
  assert.equal(t.routingMode, 'tunnel');
  assert.throws(() => buildConfig({ flags: { encryption: 'wireguard', encryptionNode: true } }), (e: unknown) => e instanceof MembraneError && e.code === 'CONFIG_UNSUPPORTED' && /routing mode tunnel/.test(e.message) && /--routing-mode native/.test(e.hint ?? ''));
  assert.equal(buildConfig({ flags: { encryption: 'wireguard', encryptionNode: true, routingMode: 'native' } }).encryptionNode, true);
  // pods' IPv6 between nodes is not routed through cilium_wg0 in native routing: refused, not leaked
  assert.throws(() => buildConfig({ flags: { encryption: 'wireguard', routingMode: 'native', enableIPv6: true } }), (e: unknown) => e instanceof MembraneError && e.code === 'CONFIG_UNSUPPORTED' && /enableIPv6/.test(e.message) && /--routing-mode tunnel/.test(e.hint ?? ''));
  assert.equal(buildConfig({ flags: { encryption: 'wireguard', enableIPv6: true } }).enableIPv6, true);
  const c = buildConfig({ flags: { encryption: 'wireguard', routingMode: 'native' } });
  assert.equal(c.encryption, 'wireguard');
  assert.equal(buildConfig({ env: { MEMBRANE_ENCRYPTION: 'wireguard', MEMBRANE_ROUTING_MODE: 'native' } }).encryption, 'wireguard');
});
