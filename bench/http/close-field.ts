/**
 * The floor servers' handling of a request's `Connection: close`: the upstream keeps its pooled
 * connection, so the field is cut from what it gets and the client's side closes instead.
 */
import type { Writable } from 'node:stream';

const CLOSE = Buffer.from('Connection: close\r\n');

/** Writes `c` to `up` without its `Connection: close` field; true when the field was there. */
export function writeWithoutClose(up: Writable, c: Buffer): boolean {
  const i = c.indexOf(CLOSE);
  if (i < 0) {
    up.write(c);
    return false;
  }
  up.cork();
  up.write(c.subarray(0, i));
  up.write(c.subarray(i + CLOSE.length));
  up.uncork();
  return true;
}

const CLOSE_LINE = Buffer.from('connection: close\r\n');

/**
 * A response the floor closes the client after, with `connection: close` after its status line
 * (as the proxy's closing head): without it an HTTP/1.1 client keeps the connection and sends its
 * next request into the closing side (wrk then counts a read error and reconnects).
 */
export function withClose(r: Buffer): Buffer {
  const i = r.indexOf('\r\n');
  return i < 0 ? r : Buffer.concat([r.subarray(0, i + 2), CLOSE_LINE, r.subarray(i + 2)]);
}
