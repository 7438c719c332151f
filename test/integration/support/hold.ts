// Runs inside a pod (via `membrane exec`): one keep-alive TCP connection to an HTTP echo server,
// a request every INTERVAL ms, printing "ok <n>" per response. Exits 1 as soon as the connection
// breaks or a response is late; exits 0 after DURATION ms, or sooner once HOLD_STOP_FILE exists
// (checked between requests: the last one was answered). Proves a connection survives.
// With HOLD_TLS_NAME (and HOLD_TLS_CA, a CA file) the connection is TLS to that server name, the
// server's certificate verified: one TLS session held through whatever proxies it.
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { existsSync, readFileSync } from 'node:fs';

const [host, portText] = process.argv.slice(2);
const interval = Number(process.env.HOLD_INTERVAL_MS ?? 200);
const duration = Number(process.env.HOLD_DURATION_MS ?? 10_000);
const tlsName = process.env.HOLD_TLS_NAME;
const stopFile = process.env.HOLD_STOP_FILE;
const sock = tlsName
  ? tlsConnect({ host: host!, port: Number(portText), servername: tlsName, ca: process.env.HOLD_TLS_CA ? readFileSync(process.env.HOLD_TLS_CA) : undefined })
  : connect({ host: host!, port: Number(portText) });
let n = 0;
let waiting = false;
let sentAt = 0;
let buf = '';
const fail = (why: string) => { process.stdout.write(`fail ${why} after ${n}\n`); process.exit(1); };
sock.setNoDelay(true);
sock.on('error', (e) => fail(e.message));
sock.on('close', () => fail('closed'));
sock.on('data', (d) => {
  buf += d.toString('latin1');
  // Responses are complete when the body announced by content-length has arrived.
  for (;;) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const len = Number(/content-length:\s*(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
    if (buf.length < end + 4 + len) return;
    buf = buf.slice(end + 4 + len);
    waiting = false;
    n++;
    process.stdout.write(`ok ${n}\n`);
  }
});
sock.on(tlsName ? 'secureConnect' : 'connect', () => {
  const started = Date.now();
  const tick = setInterval(() => {
    if (waiting) { if (Date.now() - sentAt > 3000) fail('response late'); return; }
    if (Date.now() - started > duration || (stopFile && existsSync(stopFile))) { clearInterval(tick); sock.removeAllListeners('close'); sock.end(); process.stdout.write(`done ${n}\n`); process.exit(0); }
    waiting = true;
    sentAt = Date.now();
    sock.write(`GET /hold/${n} HTTP/1.1\r\nhost: ${tlsName ?? host}\r\nconnection: keep-alive\r\n\r\n`);
  }, interval);
});
