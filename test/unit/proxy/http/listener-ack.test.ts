/**
 * The HTTP proxy's listeners ACK a request with its response: the listening socket is in the
 * kernel's delayed-ACK (pingpong) mode and the sockets it accepts inherit it, so a new
 * connection's request costs no ACK segment of its own (one loopback segment less per
 * `Connection: close` request, as HAProxy's HTTP listeners). The kernel reports the mode as
 * TCP_QUICKACK 0; a socket in quick-ACK mode (the default for a new connection) reports 1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { forwardingProxy } from './harness.ts';
import { tcpQuickAck } from '../../../../src/sys/sockopt.ts';

const fdOf = (s: net.Socket | net.Server): number => (s as unknown as { _handle: { fd: number } })._handle.fd;

test('a plain listener and the sockets it accepts are in quick-ACK mode (the kernel default this test relies on)', async () => {
  let accepted: net.Socket | undefined;
  const srv = net.createServer((s) => { accepted = s; });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    assert.equal(tcpQuickAck(fdOf(srv)), true);
    const c = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise<void>((r) => c.once('connect', r));
    while (!accepted) await new Promise((r) => setTimeout(r, 5));
    assert.equal(tcpQuickAck(fdOf(accepted)), true);
    c.destroy();
  } finally {
    accepted?.destroy();
    await new Promise((r) => srv.close(r));
  }
});

test('the HTTP proxy\'s listener and each connection it accepts are in delayed-ACK mode, and requests still pass', async () => {
  const origin = http.createServer((_q, res) => res.end('ok'));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const proxy = forwardingProxy((origin.address() as net.AddressInfo).port);
  const l = await proxy.start();
  try {
    assert.equal(tcpQuickAck(l.egress!.fd), false);
    const c = net.connect(l.egress!.port, '127.0.0.1');
    await new Promise<void>((r) => c.once('connect', r));
    while (proxy.conns.size === 0) await new Promise((r) => setTimeout(r, 5));
    const [conn] = [...proxy.conns];
    assert.equal(tcpQuickAck(fdOf(conn!.sock)), false);
    // a `Connection: close` request on it is answered and closed as before
    let got = '';
    c.on('data', (d: Buffer) => { got += d.toString('latin1'); });
    const ended = new Promise<void>((r) => c.once('end', r));
    c.write('GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await ended;
    assert.match(got, /^HTTP\/1\.1 200 /);
    assert.match(got, /\r\nconnection: close\r\n/i);
    assert.ok(got.endsWith('ok'));
    c.destroy();
  } finally {
    await proxy.stop();
    await new Promise((r) => origin.close(r));
  }
});
