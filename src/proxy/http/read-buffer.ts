/**
 * A socket's read buffer of its own (Node's `onread`): reads land in it without the Buffer, the
 * 64 KiB allocation and the Readable stream's push and `data` event Node makes per read otherwise.
 * Node asks for the next read's buffer once when the socket opens and right after every read
 * (`next`); the same buffer is handed out again only when nothing points into what was read
 * (`done(..., keeps = false)`), else the next read goes into a new one: a reused buffer never
 * holds one read's bytes while another read overwrites them. A read that filled the buffer makes
 * the next one larger (x4, up to `max`: a large body).
 */
export class ReadBuffer {
  private buf: Buffer | null = null;
  private renew = true;
  private full = false;
  private readonly first: number;
  private readonly max: number;
  private readonly pool: BufferPool | null;

  /** `pool`: where the first buffer comes from and goes back to (recycle) */
  constructor(first: number, max: number, pool: BufferPool | null = null) {
    this.first = first;
    this.max = max;
    this.pool = pool;
  }

  /** where the next read goes */
  next(): Buffer {
    let b = this.buf;
    if (b === null) {
      b = this.buf = this.pool !== null ? this.pool.take() : Buffer.allocUnsafeSlow(this.first);
      this.renew = false;
    } else if (this.renew) {
      b = this.buf = Buffer.allocUnsafeSlow(this.full ? Math.min(b.length * 4, this.max) : b.length);
      this.renew = false;
      this.full = false;
    }
    return b;
  }

  /**
   * The socket is closed (its handle reads no more): the buffer of its next read goes back to the
   * pool. Nothing else points into it: a read whose bytes were kept made the next read take a new
   * one (done, next), and what pointed into a read that was not kept went with the connection.
   */
  recycle(): void {
    const b = this.buf;
    this.buf = null;
    if (b !== null && !this.renew && this.pool !== null) this.pool.put(b);
  }

  /** after the reader handled `n` bytes read into `b`: whether it still points into them */
  done(n: number, b: Uint8Array, keeps: boolean): void {
    this.full = n === b.length && b.length < this.max;
    this.renew = this.full || keeps;
  }
}

/**
 * Read buffers of one size kept for the next sockets: a `Connection: close` client makes a
 * connection per request, and a new 4 KiB ArrayBuffer each (memory outside V8's heap, freed only
 * when the buffer is collected) made V8 run 8 x more full GCs per request (bench/http/ab.ts
 * --gc-count, 2026-12-07). Bounded: beyond `max` buffers the rest are left to the GC.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  readonly size: number;
  private readonly max: number;

  constructor(size: number, max: number) {
    this.size = size;
    this.max = max;
  }

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  put(b: Buffer): void {
    if (b.length === this.size && this.free.length < this.max) this.free.push(b);
  }

  get idle(): number {
    return this.free.length;
  }
}
