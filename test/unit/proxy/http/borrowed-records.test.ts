/**
 * Borrowed access records (HttpProxyOptions.recordsBorrowed, the proxy process's setting): a
 * record without optional fields is one object the proxy refills. What onRecord reads during the
 * call, and what the feed encodes from it, must be what a proxy that makes a new record each time
 * gives, field for field: nothing of an earlier record (its trace context, its response's time,
 * its TLS) may stay in a later one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { redirectingProxy, l7, takeRequest } from './harness.ts';
import { encodeRecord } from '../../../../src/proxy/feed/wire.ts';
import type { HttpAccessRecord } from '../../../../src/common/access-log.ts';

/** An origin answering every request with the same bytes (no Date: runs compare equal). */
async function origin(): Promise<{ port: number; close(): Promise<void> }> {
  const conns = new Set<net.Socket>();
  const srv = net.createServer((c) => {
    conns.add(c);
    c.on('close', () => conns.delete(c));
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString('latin1');
      for (let r = takeRequest(buf); r; r = takeRequest(buf)) {
        buf = r.rest;
        const head = r.line.startsWith('HEAD ');
        c.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-origin: one\r\ncontent-length: 2\r\n${r.headers.get('connection') === 'close' ? 'connection: close\r\n' : ''}\r\n${head ? '' : 'ok'}`);
      }
    });
    c.on('error', () => {});
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => new Promise((r) => { srv.close(() => r()); for (const c of conns) c.destroy(); }) };
}

const REQUESTS = [
  'GET /ok/1 HTTP/1.1\r\nHost: a.example\r\n\r\n',
  'GET /denied HTTP/1.1\r\nHost: a.example\r\n\r\n',
  'GET /ok/2 HTTP/1.1\r\nHost: a.example\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n',
  'GET /ok/3 HTTP/1.1\r\nHost: b.example\r\nUser-Agent: t\r\n\r\n',
  'HEAD /ok/4 HTTP/1.1\r\nHost: b.example\r\n\r\n',
  'GET /ok/5 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n',
];

/** Sends REQUESTS one at a time on one connection; resolves when the proxy closes it. */
async function drive(port: number): Promise<void> {
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  let got = '';
  let check: (() => void) | null = null;
  let gone = false;
  c.on('data', (d) => { got += d.toString('latin1'); check?.(); });
  const closed = new Promise<void>((r) => c.on('close', () => { gone = true; check?.(); r(); }));
  const timer = setTimeout(() => c.destroy(), 10_000);
  try {
    for (const [i, req] of REQUESTS.entries()) {
      c.write(req);
      // each answer is a complete response (200 "ok", 403 "Access denied\r\n", or a HEAD's head)
      await new Promise<void>((resolve, reject) => {
        check = () => {
          if (got.split('HTTP/1.1 ').length - 1 > i && (got.endsWith('ok') || got.endsWith('denied\r\n') || got.endsWith('\r\n\r\n'))) resolve();
          else if (gone) reject(new Error(`connection closed after ${i} answers: ${JSON.stringify(got)}`));
        };
        check();
      });
    }
    await closed;
  } finally {
    clearTimeout(timer);
    c.destroy();
  }
}

/** What a record says that does not depend on the clock or the client's port. */
function stable(rec: HttpAccessRecord): unknown {
  const w = encodeRecord(rec) as unknown[];
  const out = w[0] === 2 ? [...w] : [w[0], { ...(w[1] as object), timeMs: 0, latencyNs: 0, requestTimeMs: (w[1] as HttpAccessRecord).requestTimeMs === undefined ? 'absent' : 'set' }, ...w.slice(2)];
  if (w[0] === 2) {
    out[4] = 0; // timeMs
    out[21] = (w[21] as number) === 0 ? 0 : 'some'; // latencyNs
    out[22] = (w[22] as number) === -1 ? -1 : 'set'; // requestTimeMs
  }
  // the client's port and the server's (each proxy's own listener here)
  out[w[0] === 2 ? 6 : 3] = 0;
  out[w[0] === 2 ? 10 : 7] = 0;
  return out;
}

test('borrowed records encode as new ones, field for field, and carry nothing of the record before', async () => {
  const o = await origin();
  const policy = l7([{ method: 'GET', path: '/ok/.*' }, { method: 'HEAD', path: '/ok/.*' }]);
  const seen: Record<'fresh' | 'borrowed', { stable: unknown[]; objects: HttpAccessRecord[]; copies: Record<string, unknown>[] }> = {
    fresh: { stable: [], objects: [], copies: [] }, borrowed: { stable: [], objects: [], copies: [] },
  };
  try {
    for (const mode of ['fresh', 'borrowed'] as const) {
      const s = seen[mode];
      const p = redirectingProxy(o.port, policy, {
        recordsBorrowed: mode === 'borrowed',
        onRecord: (rec) => {
          s.stable.push(stable(rec));
          s.objects.push(rec);
          // what the record says during the call, without keys whose value is undefined
          s.copies.push(Object.fromEntries(Object.entries(rec).filter(([, v]) => v !== undefined)));
        },
      });
      const l = await p.start();
      try {
        await drive(l.egress!.port);
      } finally {
        await p.stop();
      }
    }
    const { fresh, borrowed } = seen;
    assert.equal(fresh.stable.length, REQUESTS.length * 2);
    assert.deepEqual(borrowed.stable, fresh.stable);
    // the same keys with values, in both (a stale optional field would show here)
    assert.deepEqual(borrowed.copies.map((c) => Object.keys(c).sort()), fresh.copies.map((c) => Object.keys(c).sort()));
    // the borrowed proxy lent one object for the plain records, a new one for the rest
    const plain = borrowed.copies.map((c) => c.reason === undefined && c.traceId === undefined);
    const lent = new Set(borrowed.objects.filter((_, i) => plain[i]));
    assert.equal(lent.size, 1);
    assert.ok(plain.filter(Boolean).length >= 8);
    for (const [i, rec] of borrowed.objects.entries()) if (!plain[i]) assert.ok(!lent.has(rec));
    assert.equal(new Set(fresh.objects).size, fresh.objects.length);
    // the request after the traced one has no trace context; responses have their request's time, requests none
    const at = borrowed.copies.findIndex((c) => c.path === '/ok/3' && c.type === 'request');
    assert.equal(borrowed.copies[at]!.traceId, undefined);
    for (const c of borrowed.copies) assert.equal(c.requestTimeMs !== undefined, c.type === 'response');
  } finally {
    await o.close();
  }
});
