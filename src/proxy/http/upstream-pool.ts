import type net from 'node:net';
import { ReadBuffer } from './read-buffer.ts';
import type { ReadSink, Transport } from '../transport.ts';

/** What reads an upstream connection while it is in use: the client connection it serves. */
export interface UpstreamOwner {
  onUpstreamData(chunk: Buffer): void;
  onUpstreamDrain(): void;
  onUpstreamEnd(up: Transport): void;
  onUpstreamError(up: Transport, err: Error): void;
  /**
   * After onUpstreamData: whether anything still points into the bytes it was given (a write
   * not yet taken by the kernel, a head cut across reads), so a link reading into its own
   * buffer must not read into that memory again.
   */
  keepsRead(): boolean;
}

/** A link's read buffer: 16 KiB, 64 KiB once a read filled it (a large body). */
const READ_BYTES = 16 * 1024;
const READ_BYTES_MAX = 64 * 1024;

/**
 * An upstream connection and who reads it now: a client connection, or nobody while it is idle
 * in the pool (then any byte, end or error drops it). Its listeners are added once, when the
 * connection is made, and hand each event to the owner of the moment: passing a connection from
 * client to pool to client adds and removes no listener and arms no timer (with a new client
 * connection per request, that churn was per request).
 *
 * A link made with a function (its socket made with `onread`) reads its socket into a buffer of its own (Node's
 * `onread`): a response is read without the Buffer, the 64 KiB allocation and the Readable
 * stream's push and `data` event Node makes per read otherwise. The buffer is read into again
 * only when its owner no longer points into it (keepsRead); else the next read gets a new one.
 */
export class UpstreamLink implements ReadSink {
  readonly sock: Transport;
  owner: UpstreamOwner | null;
  /** the pool holding it (set while idle there) */
  pool: UpstreamPool | null = null;
  key = '';
  /** when it went idle (ms, the proxy's coarse clock) */
  idleSince = 0;
  /** with onread: the buffer reads go into */
  private readonly rb = new ReadBuffer(READ_BYTES, READ_BYTES_MAX);

  /**
   * `sock`: a transport that reads into the link's own buffer (readWith: a TLS leg's), or one read
   * through `data` events; or a function making a socket with the `onread` options given, read
   * into the link's own buffer.
   */
  constructor(sock: Transport | ((onread: net.OnReadOpts) => net.Socket), owner: UpstreamOwner) {
    this.owner = owner;
    const link = this;
    if (typeof sock === 'function') {
      this.sock = sock({ buffer: () => link.readBuffer(), callback: (n: number, b: Uint8Array) => { link.onRead(n, b as Buffer); return true; } });
    } else if (sock.readWith) {
      this.sock = sock;
      sock.readWith(this);
    } else {
      this.sock = sock;
      sock.on('data', (c: Buffer) => {
        if (link.owner) link.owner.onUpstreamData(c);
        else link.drop(); // nothing is expected on an idle connection
      });
    }
    this.sock.on('drain', () => link.owner?.onUpstreamDrain());
    this.sock.on('end', function (this: Transport) { if (link.owner) link.owner.onUpstreamEnd(this); else link.drop(); });
    this.sock.on('close', function (this: Transport) { if (link.owner) link.owner.onUpstreamEnd(this); else link.drop(); });
    this.sock.on('error', function (this: Transport, e: Error) { if (link.owner) link.owner.onUpstreamError(this, e); else link.drop(); });
  }

  /** ReadSink (and onread): where the next read goes (Node asks once when the socket opens and after every read) */
  readBuffer(): Buffer {
    return this.rb.next();
  }

  /** ReadSink (and onread): `n` bytes read into `b` */
  onRead(n: number, b: Buffer): void {
    const o = this.owner;
    if (!o) {
      this.drop(); // nothing is expected on an idle connection
      return;
    }
    o.onUpstreamData(b.subarray(0, n));
    // asked of the owner that read it (it may have handed the link back to the pool meanwhile)
    this.rb.done(n, b, o.keepsRead());
  }

  /** Out of the pool (the server closed it, sent something unasked, or it idled too long), and closed. */
  drop(): void {
    this.pool?.remove(this);
    this.sock.destroy();
  }
}

/** Whether a transport can carry a next exchange: both ways open (a socket's readyState 'open'), its peer's end not read. */
function open(sock: Transport): boolean {
  const state = (sock as Partial<net.Socket>).readyState;
  return !sock.destroyed && !sock.readableEnded && (state === undefined || state === 'open');
}

/**
 * Idle upstream connections by (source address, mark, destination): a connection whose last
 * response was keep-alive is kept a short while (below Node's 5 s server keep-alive default) for
 * the next downstream connection of the same source to the same destination. The proxy's sweep
 * closes those idle longer (no timer per connection).
 */
export class UpstreamPool {
  private readonly idle = new Map<string, UpstreamLink[]>();
  readonly maxPerKey: number;
  readonly idleMs: number;
  constructor(maxPerKey = 64, idleMs = 4000) {
    this.maxPerKey = maxPerKey;
    this.idleMs = idleMs;
  }

  /** `link` is no longer read by its last owner. */
  put(key: string, link: UpstreamLink, now: number): void {
    link.owner = null;
    const sock = link.sock;
    let list = this.idle.get(key);
    // A paused link is not kept: its last owner stopped reading it (a write to a client that had
    // gone failed), so bytes may wait unread in the kernel or in Node, and the next owner would
    // read them as the answer to its own request (found by upgrade-property.test.ts: the next
    // client waited on a link nobody read).
    if (!open(sock) || sock.isPaused() || sock.readableLength > 0 || (list && list.length >= this.maxPerKey)) {
      sock.destroy();
      return;
    }
    if (!list) this.idle.set(key, (list = []));
    link.key = key;
    link.idleSince = now;
    link.pool = this;
    list.push(link);
  }

  /** An idle connection for `key`, now read by `owner`. */
  take(key: string, owner: UpstreamOwner): UpstreamLink | undefined {
    const list = this.idle.get(key);
    while (list && list.length) {
      const link = list.pop()!;
      if (list.length === 0) this.idle.delete(key);
      link.pool = null;
      const sock = link.sock;
      if (open(sock)) {
        link.owner = owner;
        return link;
      }
      sock.destroy();
    }
    return undefined;
  }

  remove(link: UpstreamLink): void {
    link.pool = null;
    const l = this.idle.get(link.key);
    const i = l ? l.indexOf(link) : -1;
    if (i >= 0) l!.splice(i, 1);
    if (l && l.length === 0) this.idle.delete(link.key);
  }

  /** Closes the connections idle since before `now - idleMs` (the oldest are first in each list). */
  sweep(now: number): void {
    for (const l of this.idle.values()) {
      while (l.length && now - l[0]!.idleSince > this.idleMs) l[0]!.drop();
    }
  }

  get size(): number {
    let n = 0;
    for (const l of this.idle.values()) n += l.length;
    return n;
  }

  clear(): void {
    for (const l of [...this.idle.values()]) for (const link of [...l]) link.drop();
    this.idle.clear();
  }
}
