/**
 * The access records' binary frame on the feed (proxy → agent), one codec for every record kind:
 * it carries WireRecords (wire.ts) value by value, whatever their tag, so the DNS, HTTP and TLS
 * proxies' records take the same path and decodeRecord makes records of them as before.
 *
 * Why not JSON: a proxied DNS query's two records were stringified in the proxy and parsed in the
 * agent (~1 us each side per query, bench/dns), and every name and address arrived as a new
 * string the agent kept in its flows (the ring: copied by each scavenge). Here a short string is
 * sent once per connection and referred to by its number after: the agent decodes a known name
 * or address to the same string object every time (no allocation, no parse).
 *
 * Frame: FRAME_MARK, u32 LE payload length, payload = u32 lost, u32 count, `count` values.
 * A value: one tag byte, then
 *   SMALL|n  —                   a whole number 0 … 127 (the tag byte is 0x80 + n)
 *   U16      u16 LE              a whole number 128 … 65535
 *   U32      u32 LE              a whole number 65536 … 2^32-1
 *   NEG1     —                   -1 (an absent number)
 *   F64      f64 LE              any other number (epoch ms, fractions)
 *   STR      u32 length, UTF-8   a string, not remembered (long ones: URLs, header values)
 *   STR_NEW  u32 length, UTF-8   a string, remembered as the table's next entry
 *   STR_REF  u32 index           a string remembered before (STR_REF16: u16 index)
 *   ARR      u32 count, values   a list
 *   JSON     u32 length, UTF-8   anything else (a tag-1 record's object)
 *   RESET    —                   the table starts over (then the value itself follows)
 * The table is per connection (both ends start empty on each connect) and bounded: the encoder
 * resets it when full and says so in the stream. A frame that does not decode (a tag unknown, a
 * length past the end, a reference past the table) is refused whole: the caller counts it.
 */

import { putU32le } from '../../common/bytes.ts';

/** First byte of a binary frame: never the first byte of a JSON line ('{'). */
export const FRAME_MARK = 0x01;
/** FRAME_MARK and the u32 length */
export const FRAME_HEADER = 5;

/**
 * The number slot of RecordEncoder.slotNumber(): a caller writes a number here and the encoder
 * reads it back (x86-64 and arm64 are little-endian: the slot's bytes are the frame's f64 LE).
 */
export const NUMBER_SLOT = new Float64Array(1);
const NUMBER_BYTES = new Uint8Array(NUMBER_SLOT.buffer);
NUMBER_SLOT[0] = 1;
/** the slot's bytes are f64 LE (1.0's sign and exponent last) */
const LITTLE_ENDIAN = NUMBER_BYTES[7] === 0x3f;

const U32 = 1, NEG1 = 2, F64 = 3, STR = 4, STR_NEW = 5, STR_REF = 6, ARR = 7, JSON_V = 8, RESET = 9, U16 = 10, STR_REF16 = 11, SMALL = 0x80;

/** Strings longer than this are sent whole each time (rarely repeated; they would churn the table). */
const INTERN_MAX = 64;
/** Remembered strings per connection at most (then the table starts over). */
export const TABLE_MAX = 8192;
/**
 * Slots of text(): the last string written at each and its table number. A record's strings are
 * mostly the ones the last record had at the same place (addresses, method, host, url, header
 * names and values), but new string objects per request (the proxy's parser slices them): a Map
 * lookup hashes each whole (~0.1 µs for an url, `string` the largest of the proxy's record cost,
 * --cpu-prof); comparing with the slot's last one is a length check and a memcmp.
 */
export const TEXT_SLOTS = 64;

export class RecordEncoder {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private at = 0;
  private table = new Map<string, number>();
  /** text()'s slots: the last string at each (undefined: none since the table last started over) and its number */
  private slotText: (string | undefined)[] = new Array<string | undefined>(TEXT_SLOTS).fill(undefined);
  private slotRef = new Uint16Array(TEXT_SLOTS);
  private start = 0;
  private count = 0;

  /** Starts a frame (its header is filled by end()). */
  begin(lost: number): void {
    this.at = 0;
    this.room(FRAME_HEADER + 8);
    this.buf[0] = FRAME_MARK;
    this.at = FRAME_HEADER;
    this.buf.writeUInt32LE(lost >>> 0, this.at);
    this.start = this.at + 4;
    this.at += 8;
    this.count = 0;
  }

  /** Appends one record (any WireRecord: an array of numbers, strings, lists and objects). */
  push(rec: readonly unknown[]): void {
    // room for the record's numbers and list headers (9 bytes at most each); strings make their own
    this.room(16 + 9 * rec.length);
    this.value(rec);
    this.count++;
  }

  /**
   * Appends one record written value by value (wire.ts pushRecord): the same bytes as push() of
   * the record's array, without the array. `n` values must follow (value()), then done().
   */
  open(n: number): void {
    this.room(16 + 9 * n);
    this.buf[this.at] = ARR;
    putU32le(this.buf, this.at + 1, n);
    this.at += 5;
  }

  /** Ends the record open() started. */
  done(): void {
    this.count++;
  }

  /** Records in the frame so far. */
  records(): number {
    return this.count;
  }

  /** Bytes of the frame so far. */
  size(): number {
    return this.at;
  }

  /** The frame, header included (a copy: the encoder's buffer is reused). */
  end(): Buffer {
    this.buf.writeUInt32LE(this.at - FRAME_HEADER, 1);
    this.buf.writeUInt32LE(this.count, this.start);
    return Buffer.from(this.buf.subarray(0, this.at));
  }

  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.at + n) size *= 2;
    const b = Buffer.allocUnsafe(size);
    this.buf.copy(b, 0, 0, this.at);
    this.buf = b;
  }

  /** One value: a number, a string, a list (as push() writes a nested array), anything else as JSON. */
  value(v: unknown): void {
    if (typeof v === 'number') {
      NUMBER_SLOT[0] = v;
      this.slotNumber();
      return;
    }
    if (typeof v === 'string') { this.string(v); return; }
    if (Array.isArray(v)) {
      this.room(5 + 9 * v.length);
      this.buf[this.at] = ARR;
      putU32le(this.buf, this.at + 1, v.length);
      this.at += 5;
      for (let i = 0; i < v.length; i++) this.value(v[i]);
      return;
    }
    this.bytes(JSON_V, JSON.stringify(v) ?? 'null');
  }

  /**
   * value(NUMBER_SLOT[0]): the number the caller wrote there, the same bytes. A double that is no
   * small integer (a record's epoch-ms time) handed to a call as an argument becomes a new heap
   * number whenever the call is not inlined, and reading it from a record's field to pass it on is
   * one too: two per proxied DNS query (bench/dns/loopback.ts --feed --alloc). Through the slot
   * it stays unboxed from the record's field to the frame's bytes.
   */
  slotNumber(): void {
    const v = NUMBER_SLOT[0]!;
    // a record's reservation (push, open) can be used up by its strings before its last numbers
    if (this.at + 9 > this.buf.length) this.room(9);
    if (v >>> 0 === v) {
      if (v < 128) this.buf[this.at++] = SMALL | v;
      else if (v < 65536) {
        this.buf[this.at] = U16;
        this.buf[this.at + 1] = v & 255;
        this.buf[this.at + 2] = v >>> 8;
        this.at += 3;
      } else {
        // byte by byte: putU32le(v) would take v (≥ 2^30: no small integer) as an argument
        const b = this.buf, o = this.at;
        b[o] = U32;
        b[o + 1] = v & 255; b[o + 2] = (v >>> 8) & 255; b[o + 3] = (v >>> 16) & 255; b[o + 4] = v >>> 24;
        this.at += 5;
      }
    } else if (v === -1) {
      this.buf[this.at++] = NEG1;
    } else {
      // the slot's 8 bytes as they lie (writeDoubleLE(v) would take v as an argument)
      const b = this.buf, o = this.at;
      b[o] = F64;
      if (!LITTLE_ENDIAN) { b.writeDoubleLE(v, o + 1); this.at += 9; return; }
      b[o + 1] = NUMBER_BYTES[0]!; b[o + 2] = NUMBER_BYTES[1]!; b[o + 3] = NUMBER_BYTES[2]!; b[o + 4] = NUMBER_BYTES[3]!;
      b[o + 5] = NUMBER_BYTES[4]!; b[o + 6] = NUMBER_BYTES[5]!; b[o + 7] = NUMBER_BYTES[6]!; b[o + 8] = NUMBER_BYTES[7]!;
      this.at += 9;
    }
  }

  /**
   * A string as value() writes it (the same bytes), first compared with the last one written at
   * `slot` (0 … TEXT_SLOTS-1: one per place in a record, the caller's numbering).
   */
  text(s: string, slot: number): void {
    // a record missing a field (a unit test's) writes it as value() does: JSON null, never a slot's reference
    if (typeof s !== 'string') { this.value(s); return; }
    if (s === this.slotText[slot]) { this.ref(this.slotRef[slot]!); return; }
    const ref = this.string(s);
    if (ref >= 0) { this.slotText[slot] = s; this.slotRef[slot] = ref; }
  }

  /** A list of strings as value() writes it, its i-th string at slot `slot + i` while there are slots. */
  texts(list: readonly string[], slot: number): void {
    if (!Array.isArray(list)) { this.value(list); return; }
    const n = list.length;
    this.room(5 + 9 * n);
    this.buf[this.at] = ARR;
    putU32le(this.buf, this.at + 1, n);
    this.at += 5;
    for (let i = 0; i < n; i++) {
      if (slot + i < TEXT_SLOTS) this.text(list[i]!, slot + i);
      else this.value(list[i]);
    }
  }

  private ref(ref: number): void {
    this.room(5);
    if (ref < 65536) {
      this.buf[this.at] = STR_REF16;
      this.buf[this.at + 1] = ref & 255;
      this.buf[this.at + 2] = ref >>> 8;
      this.at += 3;
      return;
    }
    this.buf[this.at] = STR_REF;
    putU32le(this.buf, this.at + 1, ref);
    this.at += 5;
  }

  /** Writes `s`; its table number (-1: sent whole, not remembered). */
  private string(s: string): number {
    if (s.length > INTERN_MAX) { this.bytes(STR, s); return -1; }
    const ref = this.table.get(s);
    if (ref !== undefined) { this.ref(ref); return ref; }
    if (this.table.size >= TABLE_MAX) {
      this.table.clear();
      this.slotText.fill(undefined);
      this.room(1);
      this.buf[this.at++] = RESET;
    }
    const n = this.table.size;
    this.table.set(s, n);
    this.bytes(STR_NEW, s);
    return n;
  }

  private bytes(tag: number, s: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit
    this.room(5 + s.length * 3);
    this.buf[this.at] = tag;
    const n = this.buf.write(s, this.at + 5, 'utf8');
    putU32le(this.buf, this.at + 1, n);
    this.at += 5 + n;
  }
}

/** Thrown inside decode() for a frame that is not one; decode() returns undefined instead. */
class BadFrame extends Error {}

/** What a decoder holds between frames (not the last payload): one for all, not a new Buffer per frame. */
const NO_PAYLOAD = Buffer.alloc(0);

export class RecordDecoder {
  private table: string[] = [];
  private buf: Buffer = NO_PAYLOAD;
  private at = 0;
  private end = 0;

  /**
   * A frame's payload (after the header) as its records and the lost count; undefined when it
   * does not decode (the table may then be behind the encoder's: the caller ends the connection).
   */
  decode(payload: Buffer): { items: unknown[][]; lost: number } | undefined {
    return this.read(payload, (d, count, lost) => {
      const items: unknown[][] = new Array(count);
      for (let i = 0; i < count; i++) {
        const v = d.value(0);
        if (!Array.isArray(v)) throw new BadFrame();
        items[i] = v;
      }
      return { items, lost };
    });
  }

  /**
   * A frame's payload read by `read` with the cursor below (wire.ts decodeFrame: records made
   * straight from the bytes, no array of values per record); undefined when the frame does not
   * decode, as decode(): a value cut short, a reference past the table, bytes after the last
   * record. `read` gets the record count and the lost count from the frame's head.
   */
  read<T>(payload: Buffer, read: (d: RecordDecoder, count: number, lost: number) => T): T | undefined {
    this.buf = payload;
    this.at = 0;
    this.end = payload.length;
    try {
      const lost = this.u32();
      const count = this.u32();
      if (count > this.end) throw new BadFrame();
      const r = read(this, count, lost);
      if (this.at !== this.end) throw new BadFrame();
      return r;
    } catch (e) {
      if (e instanceof BadFrame || e instanceof SyntaxError || e instanceof RangeError) return undefined;
      throw e;
    } finally {
      this.buf = NO_PAYLOAD;
    }
  }

  /**
   * Set by num(), str(), strs() and strsOr0() when the value read was of another kind (it is read
   * whole all the same: the frame stays in step); the caller clears it per record.
   */
  wrong = false;

  /** A record's head: its value count (the frame's values at the top are lists, or it is no frame). */
  list(): number {
    if (this.at >= this.end) throw new BadFrame();
    let tag = this.buf[this.at]!;
    // a RESET before a value belongs to it (value() reads them the same way)
    while (tag === RESET) {
      this.table = [];
      if (++this.at >= this.end) throw new BadFrame();
      tag = this.buf[this.at]!;
    }
    if (tag !== ARR) throw new BadFrame();
    this.at++;
    const n = this.u32();
    if (n > this.end - this.at) throw new BadFrame();
    return n;
  }

  /** The next value, a number (anything else: read, `wrong` set, 0). */
  num(): number {
    const at = this.at;
    const t = at < this.end ? this.buf[at]! : -1;
    if (t >= SMALL) { this.at = at + 1; return t - SMALL; }

    const v = this.value(1);
    if (typeof v === 'number') return v;
    this.wrong = true;
    return 0;
  }

  /**
   * num() into NUMBER_SLOT[0], for a caller that reads it from there into a record's field: a time
   * (no small integer) returned from num() was a new heap number per record (the slot's way back,
   * as RecordEncoder.slotNumber's there).
   */
  numSlot(): void {
    const at = this.at, b = this.buf;
    if (LITTLE_ENDIAN && at + 9 <= this.end && b[at] === F64) {
      NUMBER_BYTES[0] = b[at + 1]!; NUMBER_BYTES[1] = b[at + 2]!; NUMBER_BYTES[2] = b[at + 3]!; NUMBER_BYTES[3] = b[at + 4]!;
      NUMBER_BYTES[4] = b[at + 5]!; NUMBER_BYTES[5] = b[at + 6]!; NUMBER_BYTES[6] = b[at + 7]!; NUMBER_BYTES[7] = b[at + 8]!;
      this.at = at + 9;
      return;
    }
    NUMBER_SLOT[0] = this.num();
  }

  /** The next value, a string (anything else: read, `wrong` set, ''); `depth`: a list's element is one deeper (decode()'s limit). */
  str(depth = 1): string {
    const at = this.at;
    if (at + 3 <= this.end && this.buf[at] === STR_REF16) {
      const s = this.table[this.buf[at + 1]! | (this.buf[at + 2]! << 8)];
      if (s === undefined) throw new BadFrame();
      this.at = at + 3;
      return s;
    }
    const v = this.value(depth);
    if (typeof v === 'string') return v;
    this.wrong = true;
    return '';
  }

  /** The next value, a list of strings (anything else: read, `wrong` set, an empty list). */
  strs(): string[] {
    const at = this.at;
    if (at >= this.end || this.buf[at] !== ARR) {
      this.value(1);
      this.wrong = true;
      return [];
    }
    this.at = at + 1;
    const n = this.u32();
    if (n > this.end - this.at) throw new BadFrame();
    const a: string[] = new Array<string>(n);
    for (let i = 0; i < n; i++) a[i] = this.str(2);
    return a;
  }

  /**
   * strs(), but `prev` itself when the list is equal to it string by string (no new list for a
   * list handed on again: lists once made are never changed, so sharing one is safe).
   */
  strsAs(prev: readonly string[] | undefined): readonly string[] {
    const at = this.at;
    if (prev === undefined || at + 5 > this.end || this.buf[at] !== ARR) return this.strs();
    const n = this.buf[at + 1]! | (this.buf[at + 2]! << 8) | (this.buf[at + 3]! << 16) | (this.buf[at + 4]! << 24);
    if (n !== prev.length) return this.strs();
    this.at = at + 5;
    for (let i = 0; i < n; i++) {
      const s = this.str(2);
      if (s === prev[i]) continue;
      // its own list of n (slice and push grew one past its size: a second store per list)
      const a: string[] = new Array<string>(n);
      for (let k = 0; k < i; k++) a[k] = prev[k]!;
      a[i] = s;
      for (let k = i + 1; k < n; k++) a[k] = this.str(2);
      return a;
    }
    return prev;
  }

  /** The next value, a list of strings or 0 (an absent list on the wire); anything else as strs(). */
  strsOr0(): string[] | 0 {
    const at = this.at;
    if (at < this.end && this.buf[at] === SMALL) { this.at = at + 1; return 0; }
    return this.strs();
  }

  /** strsOr0(), a list equal to `prev` string by string being `prev` itself (strsAs). */
  strsOr0As(prev: readonly string[] | undefined): readonly string[] | 0 {
    const at = this.at;
    if (at < this.end && this.buf[at] === SMALL) { this.at = at + 1; return 0; }
    return this.strsAs(prev);
  }

  /** The next value whatever it is (decode()'s value of a record's field). */
  any(): unknown {
    return this.value(1);
  }

  private u32(): number {
    if (this.at + 4 > this.end) throw new BadFrame();
    const v = this.buf.readUInt32LE(this.at);
    this.at += 4;
    return v;
  }

  private u16(): number {
    if (this.at + 2 > this.end) throw new BadFrame();
    const v = this.buf[this.at]! | (this.buf[this.at + 1]! << 8);
    this.at += 2;
    return v;
  }

  private text(): string {
    const n = this.u32();
    if (this.at + n > this.end) throw new BadFrame();
    const s = this.buf.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }

  private value(depth: number): unknown {
    if (this.at >= this.end) throw new BadFrame();
    const tag = this.buf[this.at++]!;
    if (tag >= SMALL) return tag - SMALL;
    switch (tag) {
      case U16: return this.u16();
      case U32: return this.u32();
      case NEG1: return -1;
      case F64: {
        if (this.at + 8 > this.end) throw new BadFrame();
        const v = this.buf.readDoubleLE(this.at);
        this.at += 8;
        return v;
      }
      case STR: return this.text();
      case STR_NEW: {
        const s = this.text();
        if (this.table.length >= TABLE_MAX) throw new BadFrame();
        this.table.push(s);
        return s;
      }
      case STR_REF16: {
        const s = this.table[this.u16()];
        if (s === undefined) throw new BadFrame();
        return s;
      }
      case STR_REF: {
        const s = this.table[this.u32()];
        if (s === undefined) throw new BadFrame();
        return s;
      }
      case ARR: {
        if (depth > 4) throw new BadFrame();
        const n = this.u32();
        // each value takes a byte at least
        if (n > this.end - this.at) throw new BadFrame();
        const a: unknown[] = new Array(n);
        const buf = this.buf;
        let table = this.table;
        for (let i = 0; i < n; i++) {
          // a record's values are nearly all small numbers and known strings: read here, not
          // through a call each (value() was the agent's largest piece per record, --cpu-prof)
          const at = this.at;
          const t = at < this.end ? buf[at]! : -1;
          if (t >= SMALL) { a[i] = t - SMALL; this.at = at + 1; continue; }
          if (t === STR_REF16 && at + 3 <= this.end) {
            const s = table[buf[at + 1]! | (buf[at + 2]! << 8)];
            if (s === undefined) throw new BadFrame();
            a[i] = s;
            this.at = at + 3;
            continue;
          }
          a[i] = this.value(depth + 1);
          // a RESET among them makes a new table
          table = this.table;
        }
        return a;
      }
      case JSON_V: return JSON.parse(this.text()) as unknown;
      case RESET:
        this.table = [];
        return this.value(depth);
      default: throw new BadFrame();
    }
  }
}
