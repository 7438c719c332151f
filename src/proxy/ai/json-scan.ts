/**
 * An incremental JSON reader that keeps only the values at a few key paths (e.g. `usage`,
 * `response.usage`, `message.usage`) of a document fed in pieces: the response body or an SSE
 * event passes through untouched and is never held whole, whatever its size.
 *
 * It is a byte state machine over structure only (strings, escapes, nesting); it does not
 * validate the document (the client does that; a broken document simply yields no value). A
 * wanted value's bytes are kept (at most `maxValueBytes`) and parsed with JSON.parse once the
 * document ends. Paths go through objects only: a key inside an array element never matches.
 */

const QUOTE = 34, BSLASH = 92, LBRACE = 123, RBRACE = 125, LBRACKET = 91, RBRACKET = 93, COMMA = 44, COLON = 58;
const MAX_DEPTH = 64;
const MAX_KEY = 64;

export class JsonCapture {
  private readonly paths: readonly (readonly string[])[];
  private readonly maxDepth: number;
  private readonly maxValueBytes: number;
  /** container kind per depth (1 object, 2 array), 1-based */
  private readonly kinds = new Uint8Array(MAX_DEPTH + 1);
  /** key of the value open at each depth (objects only), null when unknown or an array */
  private readonly keys: (string | null)[] = new Array<string | null>(MAX_DEPTH + 1).fill(null);
  private depth = 0;
  private inString = false;
  private escape = false;
  /** the string being read is a key (object, before its colon) */
  private isKey = false;
  private expectKey = false;
  private readonly keyBuf = Buffer.alloc(MAX_KEY);
  private keyLen = 0;
  private keyOverflow = false;
  /** capturing the value of path `capIndex`: bytes kept, ends at the first `,`/`}` at `capDepth` */
  private capIndex = -1;
  private capDepth = 0;
  private capParts: Buffer[] = [];
  private capBytes = 0;
  private readonly values: (string | undefined)[];
  /** deeper than MAX_DEPTH: nothing more is read */
  private broken = false;

  constructor(paths: readonly (readonly string[])[], maxValueBytes = 64 * 1024) {
    this.paths = paths;
    this.maxDepth = Math.max(...paths.map((p) => p.length));
    this.maxValueBytes = maxValueBytes;
    this.values = new Array<string | undefined>(paths.length).fill(undefined);
  }

  reset(): void {
    this.depth = 0;
    this.inString = this.escape = this.isKey = this.expectKey = this.keyOverflow = this.broken = false;
    this.keyLen = 0;
    this.capIndex = -1;
    this.capParts = [];
    this.capBytes = 0;
    this.values.fill(undefined);
  }

  /** The raw text of the last value seen at path `i` (undefined when none). */
  raw(i: number): string | undefined {
    return this.values[i];
  }

  /** The last value seen at path `i`, parsed (undefined when none or not JSON). */
  value(i: number): unknown {
    const t = this.values[i];
    if (t === undefined) return undefined;
    try {
      return JSON.parse(t);
    } catch {
      return undefined;
    }
  }

  feed(buf: Buffer, start: number, end: number): void {
    if (this.broken) return;
    let capFrom = this.capIndex >= 0 ? start : -1;
    for (let i = start; i < end; i++) {
      const b = buf[i]!;
      if (this.inString) {
        if (this.escape) this.escape = false;
        else if (b === BSLASH) this.escape = true;
        else if (b === QUOTE) {
          this.inString = false;
          if (this.isKey) this.keyDone();
          continue;
        }
        if (this.isKey) {
          if (this.keyLen < MAX_KEY) this.keyBuf[this.keyLen++] = b;
          else this.keyOverflow = true;
        }
        continue;
      }
      switch (b) {
        case QUOTE:
          this.inString = true;
          this.isKey = this.expectKey && this.capIndex < 0;
          if (this.isKey) { this.keyLen = 0; this.keyOverflow = false; this.expectKey = false; }
          break;
        case COLON:
          if (this.depth <= this.maxDepth && this.kinds[this.depth] === 1 && this.capIndex < 0) this.maybeCapture();
          if (this.capIndex >= 0 && capFrom < 0) capFrom = i + 1;
          break;
        case LBRACE:
        case LBRACKET:
          if (this.depth >= MAX_DEPTH) { this.broken = true; this.capIndex = -1; return; }
          this.depth++;
          this.kinds[this.depth] = b === LBRACE ? 1 : 2;
          this.keys[this.depth] = null;
          this.expectKey = b === LBRACE && this.capIndex < 0;
          break;
        case RBRACE:
        case RBRACKET:
          if (this.capIndex >= 0 && this.depth === this.capDepth) {
            this.endCapture(buf, capFrom, i);
            capFrom = -1;
          }
          if (this.depth > 0) this.depth--;
          this.expectKey = false;
          break;
        case COMMA:
          if (this.capIndex >= 0 && this.depth === this.capDepth) {
            this.endCapture(buf, capFrom, i);
            capFrom = -1;
          }
          this.expectKey = this.kinds[this.depth] === 1 && this.capIndex < 0;
          break;
        default:
          break;
      }
    }
    if (this.capIndex >= 0 && capFrom >= 0 && capFrom < end) this.keep(buf, capFrom, end);
  }

  private keyDone(): void {
    this.isKey = false;
    if (this.depth <= this.maxDepth) this.keys[this.depth] = this.keyOverflow ? null : this.keyBuf.toString('utf8', 0, this.keyLen);
  }

  /** After a key's colon at `depth`: does the key path match a wanted path? */
  private maybeCapture(): void {
    const d = this.depth;
    for (let p = 0; p < this.paths.length; p++) {
      const path = this.paths[p]!;
      if (path.length !== d) continue;
      let ok = true;
      for (let k = 1; k <= d && ok; k++) ok = this.kinds[k] === 1 && this.keys[k] === path[k - 1];
      if (ok) {
        this.capIndex = p;
        this.capDepth = d;
        this.capParts = [];
        this.capBytes = 0;
        return;
      }
    }
  }

  private keep(buf: Buffer, from: number, to: number): void {
    if (to <= from) return;
    this.capBytes += to - from;
    if (this.capBytes > this.maxValueBytes) return;
    this.capParts.push(Buffer.from(buf.subarray(from, to)));
  }

  private endCapture(buf: Buffer, from: number, to: number): void {
    if (from >= 0) this.keep(buf, from, to);
    if (this.capBytes <= this.maxValueBytes) this.values[this.capIndex] = Buffer.concat(this.capParts).toString('utf8').trim();
    this.capIndex = -1;
    this.capParts = [];
    this.capBytes = 0;
    // the value ended at a `,` (a key follows) or at the `}` closing its object
    this.expectKey = true;
  }
}
