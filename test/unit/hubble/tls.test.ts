/** Hubble TLS settings: server names, the agent's settings, client addresses and flags. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { hubbleServerName, hubbleTcpSecurity, clientTlsOptions } from '../../../src/hubble/tls.ts';
import { buildConfig } from '../../../src/common/config.ts';
import { parseServer, formatTarget, hubbleTransport } from '../../../src/hubble/client.ts';
import { MembraneError } from '../../../src/common/errors.ts';

const LAB = { certFile: '/s/node1/server.crt', keyFile: '/s/node1/server.key', clientCaFiles: ['/s/ca.crt'] };
const code = (c: string) => (e: unknown) => e instanceof MembraneError && e.code === c;

test('server name: <node>.<cluster>.hubble-grpc.cilium.io, dots become hyphens (Cilium TLSServerName)', () => {
  const cases: [string, string | undefined, string][] = [
    ['node1', undefined, 'node1.default.hubble-grpc.cilium.io'],
    ['node1', '', 'node1.default.hubble-grpc.cilium.io'],
    ['moseisley', 'tatooine', 'moseisley.tatooine.hubble-grpc.cilium.io'],
    ['ip-10-0-0-1.ec2.internal', 'prod.eu', 'ip-10-0-0-1-ec2-internal.prod-eu.hubble-grpc.cilium.io'],
  ];
  for (const [node, cluster, want] of cases) assert.equal(hubbleServerName(node, cluster), want);
  // always exactly two labels before the service domain, whatever the names hold
  fc.assert(fc.property(fc.stringMatching(/^[a-z0-9.-]{1,20}$/), fc.stringMatching(/^[a-z0-9.-]{1,20}$/), (n, c) => {
    assert.equal(hubbleServerName(n, c).split('.').length, 5);
  }));
});

test('agent settings: mutual TLS with the lab files by default, plain text only when set to true', () => {
  const sec = (env: Record<string, string>) => hubbleTcpSecurity(buildConfig({ env }), LAB);
  assert.deepEqual(sec({}), { tls: LAB });
  assert.deepEqual(sec({ MEMBRANE_HUBBLE_DISABLE_TLS: 'false' }), { tls: LAB });
  assert.deepEqual(sec({ MEMBRANE_HUBBLE_DISABLE_TLS: '' }), { tls: LAB });
  assert.deepEqual(sec({ MEMBRANE_HUBBLE_DISABLE_TLS: 'true' }), { plaintext: true });
  for (const v of ['yes', 'TRUE', 'on', ' true']) {
    assert.throws(() => sec({ MEMBRANE_HUBBLE_DISABLE_TLS: v }), code('CONFIG_INVALID'), v);
  }
  assert.deepEqual(sec({
    MEMBRANE_HUBBLE_TLS_CERT_FILE: '/etc/h/server.crt', MEMBRANE_HUBBLE_TLS_KEY_FILE: '/etc/h/server.key',
    MEMBRANE_HUBBLE_TLS_CLIENT_CA_FILES: '/etc/h/a.crt, /etc/h/b.crt,',
  }), { tls: { certFile: '/etc/h/server.crt', keyFile: '/etc/h/server.key', clientCaFiles: ['/etc/h/a.crt', '/etc/h/b.crt'] } });
  // no provider files and none set: nothing to serve TLS with (the Observer refuses: HUBBLE_TLS_REQUIRED)
  assert.equal(hubbleTcpSecurity(buildConfig({ env: {} })), undefined);
  assert.deepEqual(hubbleTcpSecurity(buildConfig({ env: { MEMBRANE_HUBBLE_DISABLE_TLS: 'true' } })), { plaintext: true });
});

test('client addresses: tls:// and https:// select TLS; unix paths take no TLS options', () => {
  assert.deepEqual(parseServer('tls://192.0.2.1:4244'), { kind: 'tcp', host: '192.0.2.1', port: 4244, tls: true });
  assert.deepEqual(parseServer('https://[fd00::1]:4244'), { kind: 'tcp', host: 'fd00::1', port: 4244, tls: true });
  assert.deepEqual(parseServer('192.0.2.1:4244'), { kind: 'tcp', host: '192.0.2.1', port: 4244 });
  assert.equal(formatTarget(parseServer('tls://192.0.2.1:4244')), 'tls://192.0.2.1:4244');
  assert.throws(() => parseServer('tls://nohost'), code('HUBBLE_BAD_SERVER'));
  assert.throws(() => hubbleTransport({ kind: 'unix', path: '/nonexistent.sock' }, { enabled: true }), code('HUBBLE_TLS_UNIX'));
  assert.throws(() => clientTlsOptions({ certFile: '/c.crt' }), code('HUBBLE_TLS_CLIENT_PAIR'));
  assert.throws(() => clientTlsOptions({ keyFile: '/c.key' }), code('HUBBLE_TLS_CLIENT_PAIR'));
  assert.throws(() => clientTlsOptions({ caFiles: ['/nonexistent/ca.crt'] }), code('HUBBLE_TLS_FILE'));
  assert.deepEqual(clientTlsOptions({ serverName: 'node1.default.hubble-grpc.cilium.io' }), { minVersion: 'TLSv1.3', servername: 'node1.default.hubble-grpc.cilium.io' });
});
