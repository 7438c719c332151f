/**
 * floor-server.ts with the client side driven on the accepted TCP handle itself, no net.Socket:
 * what a lighter client connection would save per `Connection: close` request (issue 18's lead:
 * Node's Socket construction, its stream state, listeners, nextTicks and destroy path per
 * connection). The listening handle's `onconnection` gets the accepted handle (as proxy.ts's
 * ownReadSocket does); reads go into a pooled 4 KiB buffer of its own (`useUserBuffer`, as the
 * proxy's ReadBuffer), writes and the shutdown are Node's stream_wrap requests, the handle is
 * closed at the client's FIN. The upstream side stays a pooled net.Socket (not per connection).
 * Node has no public API for this: it reaches `process.binding('stream_wrap')` (deprecated,
 * DEP0111) for the read length and the write and shutdown requests. A measure, not a proxy: each
 * read is trusted to be one whole request or response, as floor-server.ts does.
 *
 * Measured (2026-12-07 12:48-12:49 UTC, one `cpu measure` hold, load 3.4 -> 2.7, medians of 3
 * interleaved 3 s rounds of wrk -c50 `Connection: close`): `bench/http/ab.ts --a . --b . --b-server
 * bench/http/floor-server.ts --b-env MEMBRANE_BENCH_OWN_READ=1 --modes close --secs 3 --rounds 3`:
 * membrane 102.6 µs of proxy CPU per request (92.6-106.9, + stand-in 4.0), the own-read floor 56.0
 * (52.0-57.3); then `--a-server bench/http/floor-server.ts --a-env MEMBRANE_BENCH_OWN_READ=1
 * --b-server bench/http/raw-floor-server.ts`: own-read floor 53.2 (53.0-54.2), this raw floor 45.7
 * (45.5-46.1), both 16.1-16.4k req/s. Node's Socket is ~7.5 µs per connection (of it GC: 4 % of
 * the own-read floor's samples, 0.2 % of this one's); the same syscalls per request (strace -c).
 *
 *   bin/node bench/http/raw-floor-server.ts --port 18081 --origin 18080   (bench/http/ab.ts --a-server)
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { withClose, writeWithoutClose } from './close-field.ts';

const { values } = parseArgs({ options: { port: { type: 'string', default: '18081' }, origin: { type: 'string', default: '18080' }, rules: { type: 'string', default: '0' } } });
const ORIGIN = Number(values.origin);

interface Req { handle?: RawHandle; oncomplete?: (status: number) => void; async?: boolean; buffer?: Buffer }
interface RawHandle {
  onread: (ab: ArrayBuffer | undefined) => void;
  useUserBuffer(b: Uint8Array): void;
  readStart(): number;
  writeBuffer(req: Req, b: Buffer): number;
  shutdown(req: Req): number;
  close(cb?: () => void): void;
  conn?: Conn;
}
const sw = (process as unknown as { binding(n: string): Record<string, unknown> }).binding('stream_wrap') as {
  WriteWrap: new () => Req; ShutdownWrap: new () => Req; streamBaseState: Int32Array; kReadBytesOrError: number; kLastWriteWasAsync: number;
};
const state = sw.streamBaseState;

const idle: net.Socket[] = [];
const buffers: Buffer[] = [];

class Conn {
  readonly h: RawHandle;
  readonly buf: Buffer;
  up: net.Socket | null = null;
  closing = false;
  closed = false;
  constructor(h: RawHandle) {
    this.h = h;
    this.buf = buffers.pop() ?? Buffer.allocUnsafeSlow(4096);
  }

  write(b: Buffer): void {
    const req = new sw.WriteWrap();
    req.handle = this.h;
    req.oncomplete = noop;
    req.async = false;
    if (this.h.writeBuffer(req, b) !== 0) return this.close();
    // written later: the request keeps the bytes until it completes
    if (state[sw.kLastWriteWasAsync]) req.buffer = b;
  }

  end(): void {
    const req = new sw.ShutdownWrap();
    req.handle = this.h;
    req.oncomplete = noop;
    if (this.h.shutdown(req) !== 0) this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const up = this.up;
    this.up = null;
    if (up && !up.destroyed) {
      (up as net.Socket & { conn?: Conn | null }).conn = null;
      idle.push(up);
    }
    this.h.close();
    buffers.push(this.buf);
  }
}

function noop(): void {}

function onRead(this: RawHandle): void {
  const c = this.conn!;
  const n = state[sw.kReadBytesOrError]!;
  // nothing read (EAGAIN) or, below 0, the client's FIN (UV_EOF, read as the proxy reads it) or an error: closed
  if (n <= 0) {
    if (n < 0) c.close();
    return;
  }
  const chunk = c.buf.subarray(0, n);
  let up = c.up;
  if (!up) {
    up = c.up = idle.pop() ?? newUpstream();
    (up as net.Socket & { conn?: Conn | null }).conn = c;
  }
  // the chunk is written (or copied by Node into its write queue) before the next read reuses the buffer
  if (writeWithoutClose(up, Buffer.from(chunk))) c.closing = true;
}

function newUpstream(): net.Socket {
  const up = net.connect({ port: ORIGIN, host: '127.0.0.1', noDelay: true }) as net.Socket & { conn?: Conn | null };
  up.on('data', (r: Buffer) => {
    const c = up.conn;
    if (!c || c.closed) return;
    if (c.closing) {
      c.write(withClose(r));
      c.end();
    } else c.write(r);
  });
  return up;
}

const srv = net.createServer({ noDelay: true }, () => {});
srv.listen(Number(values.port), '127.0.0.1', () => {
  const lh = (srv as unknown as { _handle: { onconnection: (err: number, h: RawHandle) => void } })._handle;
  lh.onconnection = (err, h) => {
    if (err) return;
    const c = new Conn(h);
    h.conn = c;
    h.onread = onRead;
    h.useUserBuffer(c.buf);
    if (h.readStart() !== 0) c.close();
  };
  console.log('ready');
});
process.on('SIGTERM', () => process.exit(0));
