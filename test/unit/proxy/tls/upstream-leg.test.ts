/**
 * The upstream leg's Transport (src/proxy/tls/upstream-leg.ts) on its own, opened by an
 * origination against a Node TLS server: a half-close (end() while the server still answers, as a
 * tunnel's), corked writes as one record, destroy, and the events' order; every leg freed.
 */
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { CertificateIssuer } from '../../../../src/proxy/tls/issuer.ts';
import { originationFor, resetOriginations } from '../../../../src/proxy/tls/origination.ts';
import { liveLegs } from '../../../../src/sys/tls-leg.ts';
import { opensslCA } from './helpers.ts';

const NAME = 'leg.origin.example';
const test = (name: string, fn: () => Promise<void>): void => { nodeTest(name, { timeout: 30_000 }, fn); };
const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));
let ca: { cert: string; key: string };
let srv: tls.Server;
let port = 0;
/** what the server does with each connection */
let onConn: (s: tls.TLSSocket) => void = () => {};
const conns = new Set<net.Socket>();

before(async () => {
  ca = opensslCA('upstream leg CA');
  const leaf = await (await CertificateIssuer.fromPem(ca.cert, ca.key)).certFor(NAME);
  srv = tls.createServer({ cert: leaf.certPem, key: leaf.keyPem, allowHalfOpen: true }, (s) => { s.on('error', () => {}); onConn(s); });
  srv.on('connection', (s: net.Socket) => { conns.add(s); s.on('close', () => conns.delete(s)); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  port = (srv.address() as net.AddressInfo).port;
});
after(async () => {
  for (const c of conns) c.destroy();
  await new Promise<void>((r) => srv.close(() => r()));
  resetOriginations();
});

async function legsFreed(): Promise<void> {
  for (let i = 0; i < 200 && liveLegs() > 0; i++) await tick(2);
  assert.equal(liveLegs(), 0, 'every leg freed');
}

test('end() is a half-close: the server\'s answer after our close_notify still arrives, then its end, then close', async () => {
  const serverRecords: number[] = [];
  onConn = (s) => {
    s.on('data', (d: Buffer) => serverRecords.push(d.length));
    // our close_notify: the server answers late, then ends its side
    s.on('end', () => { s.end('late answer'); });
  };
  const t = originationFor(ca.cert, NAME).open(-1, '127.0.0.1', port);
  const events: string[] = [];
  let got = '';
  t.on('data', (d: Buffer) => { got += d.toString(); events.push('data'); });
  t.on('end', () => events.push('end'));
  t.on('error', (e: Error) => events.push(`error ${e.message}`));
  const closed = new Promise<void>((r) => t.on('close', () => { events.push('close'); r(); }));
  // corked: the three pieces leave as one write (the server reads one record)
  t.cork();
  t.write('a'.repeat(10));
  t.write(Buffer.from('b'.repeat(20)));
  t.write('c'.repeat(30));
  t.uncork();
  t.end();
  await closed;
  assert.equal(got, 'late answer');
  assert.deepEqual(events, ['data', 'end', 'close']);
  assert.deepEqual(serverRecords, [60], 'one record of the corked writes');
  await legsFreed();
});

test('end() after the handshake is a half-close too (the server answers, then ends)', async () => {
  onConn = (s) => {
    s.once('data', () => s.write('pong'));
    s.on('end', () => { s.end('late answer'); });
  };
  const t = originationFor(ca.cert, NAME).open(-1, '127.0.0.1', port);
  let got = '';
  let pong!: () => void;
  const ponged = new Promise<void>((r) => { pong = r; });
  t.on('data', (d: Buffer) => { got += d.toString(); if (got === 'pong') pong(); });
  t.on('error', () => {});
  const closed = new Promise<void>((r) => t.on('close', () => r()));
  t.write('ping');
  await ponged;
  t.end();
  await closed;
  assert.equal(got, 'ponglate answer');
  await legsFreed();
});

test('destroy(): close once, no error; writes after it are refused', async () => {
  onConn = () => {};
  const t = originationFor(ca.cert, NAME).open(-1, '127.0.0.1', port);
  const events: string[] = [];
  t.on('error', () => events.push('error'));
  const closed = new Promise<void>((r) => t.on('close', () => { events.push('close'); r(); }));
  t.write('x');
  t.destroy();
  t.destroy();
  assert.equal(t.destroyed, true);
  assert.equal(t.write('y'), false);
  await closed;
  await tick(10);
  assert.deepEqual(events, ['close']);
  await legsFreed();
});

test('a write after end() is refused, before the handshake too: nothing follows our close_notify', async () => {
  const got: string[] = [];
  onConn = (s) => {
    s.on('data', (d: Buffer) => got.push(d.toString()));
    s.on('end', () => { s.end(); });
  };
  const t = originationFor(ca.cert, NAME).open(-1, '127.0.0.1', port);
  t.on('error', () => {});
  const closed = new Promise<void>((r) => t.on('close', () => r()));
  t.write('before'); // held for the handshake (false: `drain` follows)
  t.end();
  assert.equal(t.write('after'), false, 'refused once ended');
  await closed;
  assert.deepEqual(got, ['before']);
  await legsFreed();
});
