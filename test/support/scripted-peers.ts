/**
 * The peers of a proxy's close tests (test/unit/proxy/{http,tls}/close-at-once.test.ts): a scripted
 * origin that answers every request head at once, plain or TLS; a client socket that records what
 * it read, the FIN and any error (a reset); and a TCP relay that records what the proxy sent and can
 * stop reading from it.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface Closable { port: number; close(): Promise<void> }

/**
 * An origin that answers each request head with `answer(head)` (one write per chunk) as soon as the
 * head is in; bodies are read and ignored. With `tls`, a TLS server with those options.
 */
export async function headOrigin(answer: (head: string) => string | Buffer | (string | Buffer)[], o: { tls?: tls.TlsOptions } = {}): Promise<Closable> {
  const socks = new Set<net.Socket>();
  const onConn = (s: net.Socket) => {
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end; (end = buf.indexOf('\r\n\r\n')) >= 0;) {
        const head = buf.slice(0, end);
        buf = '';
        const out = answer(head);
        for (const chunk of Array.isArray(out) ? out : [out]) s.write(chunk);
      }
    });
  };
  const srv = o.tls ? tls.createServer(o.tls, onConn) : net.createServer(onConn);
  if (o.tls) srv.on('tlsClientError', () => {});
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: async () => { for (const s of socks) s.destroy(); await new Promise((r) => srv.close(r)); },
  };
}

export interface RecordingSocket<S extends net.Socket> { sock: S; got: () => Buffer; ended: () => boolean; error: () => string }

/** Records what `sock` reads, its FIN and its error's code, from now on. */
export function recording<S extends net.Socket>(sock: S): RecordingSocket<S> {
  const chunks: Buffer[] = [];
  let ended = false, error = '';
  sock.on('data', (d: Buffer) => chunks.push(d));
  sock.on('end', () => { ended = true; });
  sock.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message; });
  return { sock, got: () => Buffer.concat(chunks), ended: () => ended, error: () => error };
}

/**
 * Writes `bytes` (after the response), then `x` twice 200 ms apart while the socket lives, then
 * waits 200 ms: a reset the first write drew (the proxy's side closed) shows as an error (a client
 * whose read side ended reads no more, so the reset is seen at a later write).
 */
export async function sendAfter(c: { sock: net.Socket }, bytes: Buffer | string): Promise<void> {
  c.sock.write(bytes);
  for (let i = 0; i < 2; i++) {
    await new Promise((r) => setTimeout(r, 200));
    if (!c.sock.destroyed) c.sock.write('x');
  }
  await new Promise((r) => setTimeout(r, 200));
}

export interface TapRelay extends Closable {
  /** every byte the proxy sent */
  fromProxy(): Buffer;
  proxyEnded(): boolean;
  /** the proxy side's error code (a reset), or '' */
  proxyError(): string;
  /** stops reading from the proxy for `ms` (its kernel buffers fill) */
  hold(ms: number): void;
}

/**
 * A TCP relay between one client and the proxy at `proxyPort`: records what the proxy sent, passes
 * each side's FIN and reset on (half-close kept), and can stop reading from the proxy.
 */
export async function tapRelay(proxyPort: number): Promise<TapRelay> {
  const chunks: Buffer[] = [];
  let ended = false, error = '';
  let toProxy: net.Socket | undefined;
  let toClient: net.Socket | undefined;
  const srv = net.createServer({ allowHalfOpen: true }, (c) => {
    toClient = c;
    const p = net.connect({ port: proxyPort, host: '127.0.0.1', allowHalfOpen: true });
    toProxy = p;
    p.on('data', (d: Buffer) => { chunks.push(d); c.write(d); });
    p.on('end', () => { ended = true; c.end(); });
    c.on('data', (d: Buffer) => p.write(d));
    c.on('end', () => p.end());
    // a reset passes on as a reset (a plain close here would hide it from the client)
    p.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message; c.resetAndDestroy(); });
    c.on('error', () => p.resetAndDestroy());
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    fromProxy: () => Buffer.concat(chunks),
    proxyEnded: () => ended,
    proxyError: () => error,
    hold(ms) { toProxy!.pause(); setTimeout(() => toProxy!.resume(), ms); },
    close: async () => { toProxy?.destroy(); toClient?.destroy(); await new Promise((r) => srv.close(r)); },
  };
}
