/**
 * bench/tls's handshake facts (cipher.ts): what `openssl s_client -msg` shows of a full handshake
 * and its resumption, read from transcripts, and read live from the interceptor's leaf context
 * (what bench/tls prints for membrane beside HAProxy's).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { describeHandshake, handshakeFacts, parseSClient } from '../../../bench/tls/cipher.ts';
import { CertificateIssuer } from '../../../src/proxy/tls/issuer.ts';
import { opensslCA } from '../proxy/tls/helpers.ts';

// excerpts of real transcripts (OpenSSL 3.0 s_client against the bench's HAProxy and membrane), hex dumps left out
const FULL = `CONNECTED(00000003)
>>> TLS 1.3, Handshake [length 013b], ClientHello
<<< TLS 1.3, Handshake [length 007a], ServerHello
<<< TLS 1.3, Handshake [length 001c], EncryptedExtensions
<<< TLS 1.3, Handshake [length 0340], Certificate
Certificate chain
 0 s:CN = api.bench.test
   i:CN = bench ica
   a:PKEY: id-ecPublicKey, 256 (bit); sigalg: ecdsa-with-SHA256
 1 s:CN = bench ica
   i:CN = bench ica
   a:PKEY: id-ecPublicKey, 256 (bit); sigalg: ecdsa-with-SHA256
---
Peer signing digest: SHA256
Peer signature type: ECDSA
Server Temp Key: X25519, 253 bits
---
New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256
Server public key is 256 bit
<<< TLS 1.3, Handshake [length 00d9], NewSessionTicket
<<< TLS 1.3, Handshake [length 00d9], NewSessionTicket
HTTP/1.1 200 OK
`;
const RESUMED = `CONNECTED(00000003)
<<< TLS 1.3, Handshake [length 007a], ServerHello
Server Temp Key: X25519, 253 bits
---
Reused, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256
<<< TLS 1.3, Handshake [length 00d9], NewSessionTicket
`;

test('a full handshake: suite, group, signature, chain keys, tickets', () => {
  const f = parseSClient(FULL);
  assert.deepEqual(f, {
    version: 'TLSv1.3', suite: 'TLS_AES_128_GCM_SHA256', group: 'X25519', signature: 'ECDSA-SHA256',
    chain: ['id-ecPublicKey 256', 'id-ecPublicKey 256'], tickets: 2, reused: false,
  });
  const r = parseSClient(RESUMED);
  assert.equal(r.reused, true);
  assert.equal(r.tickets, 1);
  assert.equal(r.signature, undefined);
  assert.equal(describeHandshake({ full: f, resumed: r }), 'TLSv1.3 TLS_AES_128_GCM_SHA256, X25519, ECDSA-SHA256, chain id-ecPublicKey 256 < id-ecPublicKey 256, tickets 2 full / 1 resumed');
});

test('an RSA leaf and a refused resumption read as such', () => {
  const rsa = FULL.replace('a:PKEY: id-ecPublicKey, 256', 'a:PKEY: rsaEncryption, 2048').replace('Peer signature type: ECDSA', 'Peer signature type: RSA-PSS');
  const f = parseSClient(rsa);
  assert.deepEqual(f.chain, ['rsaEncryption 2048', 'id-ecPublicKey 256']);
  assert.equal(f.signature, 'RSA-PSS-SHA256');
  const notResumed = parseSClient(RESUMED.replace('Reused,', 'New,'));
  assert.match(describeHandshake({ full: f, resumed: notResumed }), /tickets 2 full \/ not resumed$/);
  assert.equal(describeHandshake({ full: parseSClient('connect: Connection refused'), resumed: notResumed }), 'unknown (no handshake)');
});

test("the interceptor's leaf context, live: ECDSA P-256 leaf under its CA, X25519, two tickets then one renewed per resumption", async () => {
  const ca = opensslCA('bench facts CA');
  const issuer = await CertificateIssuer.fromPem(ca.cert, ca.key);
  const leaf = await issuer.certFor('api.bench.test');
  // as intercept.ts starts TLS: the accepted socket wrapped by a server TLSSocket with the leaf's context
  const srv = net.createServer((raw) => {
    const s = new tls.TLSSocket(raw, { isServer: true, secureContext: leaf.context });
    s.on('error', () => {});
    s.once('data', () => s.end('HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    const port = (srv.address() as net.AddressInfo).port;
    const h = await handshakeFacts(port, 'api.bench.test');
    assert.equal(h.full.version, 'TLSv1.3');
    assert.equal(h.full.group, 'X25519');
    assert.equal(h.full.signature, 'ECDSA-SHA256');
    assert.deepEqual(h.full.chain, ['id-ecPublicKey 256', 'id-ecPublicKey 256']);
    assert.equal(h.full.tickets, 2);
    assert.equal(h.resumed.reused, true, 'the ticket of the full handshake resumes');
    // renewal (issuer.ts renewingTickets): without it a resumed TLS 1.3 handshake gets no ticket from Node
    assert.equal(h.resumed.tickets, 1);
  } finally {
    srv.close();
  }
});
