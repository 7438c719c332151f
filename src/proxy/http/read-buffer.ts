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

  constructor(first: number, max: number) {
    this.first = first;
    this.max = max;
  }

  /** where the next read goes */
  next(): Buffer {
    let b = this.buf;
    if (b === null || this.renew) {
      b = this.buf = Buffer.allocUnsafeSlow(b === null ? this.first : this.full ? Math.min(b.length * 4, this.max) : b.length);
      this.renew = false;
      this.full = false;
    }
    return b;
  }

  /** after the reader handled `n` bytes read into `b`: whether it still points into them */
  done(n: number, b: Uint8Array, keeps: boolean): void {
    this.full = n === b.length && b.length < this.max;
    this.renew = this.full || keeps;
  }
}
