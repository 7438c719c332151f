/**
 * GetFlows responses as bytes, for the Observer's gRPC fast path (observer.ts): a flow is encoded
 * once, the first time a reader asks for it, and every reader after that gets the same bytes; a
 * field mask of top-level fields only (the UI's, `hubble observe -o json --print-raw-filters`'s
 * own) is applied to those bytes by keeping the masked fields' records, no message copied or
 * encoded again. A 10,000-flow replay through connect-node spent most of the server's CPU
 * copying each flow for the mask, encoding it, and in the per-message async pipeline
 * (bench/ui/replay-server.ts, CPU profile).
 *
 * Flows are immutable once in the ring (the ingest path finishes them before ring.pushFlow), so
 * the bytes kept beside a flow never go stale.
 */
import { BoundedCache } from '../common/bounded-cache.ts';
import { toBinary, type DescMessage } from '@bufbuild/protobuf';
import { TimestampSchema, type Timestamp } from '@bufbuild/protobuf/wkt';
import { FlowSchema, type Flow } from './gen/flow/flow_pb.js';

const encoded = new WeakMap<Flow, Uint8Array>();

/** The flow's own encoding (FlowSchema), made once per flow. */
export function flowBytes(flow: Flow): Uint8Array {
  let b = encoded.get(flow);
  if (!b) encoded.set(flow, (b = toBinary(FlowSchema, flow)));
  return b;
}

/**
 * The field numbers of a mask whose every path is a whole top-level field of `schema`, or
 * undefined when one reaches inside a message (then the masked copy is encoded instead).
 */
export function topLevelMask(schema: DescMessage, paths: readonly string[]): Set<number> | undefined {
  if (paths.length === 0 || paths.some((p) => p.includes('.'))) return undefined;
  const out = new Set<number>();
  for (const p of paths) {
    const f = schema.fields.find((x) => x.name === p);
    if (!f) return undefined;
    out.add(f.number);
  }
  return out;
}

/** Reads a varint at `at`; returns [value, next offset]. Values above 2^53 lose precision, which only lengths and tags are read for. */
function varint(b: Uint8Array, at: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (;;) {
    if (at >= b.length) throw new Error('truncated varint');
    const x = b[at++]!;
    v += (x & 0x7f) * mul;
    if (x < 0x80) return [v, at];
    mul *= 128;
    if (mul > 2 ** 63) throw new Error('varint over 10 bytes');
  }
}

/**
 * The records of `msg` (an encoded message) whose field number is in `keep`, in their order:
 * the encoding of the message with only those fields set.
 */
export function keepFields(msg: Uint8Array, keep: ReadonlySet<number>, out: ByteWriter): void {
  let at = 0;
  while (at < msg.length) {
    const start = at;
    const [tag, afterTag] = varint(msg, at);
    at = afterTag;
    switch (tag & 7) {
      case 0: at = varint(msg, at)[1]; break;
      case 1: at += 8; break;
      case 2: { const [n, p] = varint(msg, at); at = p + n; break; }
      case 5: at += 4; break;
      default: throw new Error(`wire type ${tag & 7} in a flow`);
    }
    if (at > msg.length) throw new Error('truncated field');
    if (keep.has(Math.floor(tag / 8))) out.bytes(msg, start, at);
  }
}

/** A growing byte buffer: a batch of gRPC frames, written at once. */
export class ByteWriter {
  buf: Uint8Array;
  len = 0;
  constructor(size = 64 * 1024) {
    this.buf = new Uint8Array(size);
  }
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  byte(x: number): void {
    this.room(1);
    this.buf[this.len++] = x;
  }
  varint(v: number): void {
    this.room(10);
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.len++] = v;
  }
  bytes(src: Uint8Array, from = 0, to = src.length): void {
    this.room(to - from);
    this.buf.set(src.subarray(from, to), this.len);
    this.len += to - from;
  }
  /** 4 bytes reserved now, filled by setUint32 later (a length known only after its content). */
  reserve4(): number {
    this.room(4);
    this.len += 4;
    return this.len - 4;
  }
  setUint32(at: number, v: number): void {
    this.buf[at] = v >>> 24;
    this.buf[at + 1] = (v >>> 16) & 0xff;
    this.buf[at + 2] = (v >>> 8) & 0xff;
    this.buf[at + 3] = v & 0xff;
  }
  /** The bytes so far, copied out; the writer starts empty again (its buffer kept). */
  take(): Buffer {
    const b = Buffer.from(this.buf.subarray(0, this.len));
    this.len = 0;
    return b;
  }
}

const utf8 = new TextEncoder();
const scratch = new ByteWriter(4096);
/** node names' UTF-8, per name (a relay sees a few) */
const nameBytes = new BoundedCache<string, Uint8Array>(1024);
const encodeName = (name: string): Uint8Array => utf8.encode(name);

/** Length of the varint encoding of v. */
function varintLen(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/**
 * One gRPC frame (flag 0, big-endian length) holding a GetFlowsResponse: the flow (field 1,
 * `flowBytes` or the masked records of them), node_name (1000) and time (1001), as toBinary
 * writes them. `keep`: the top-level mask's field numbers, or undefined for the whole flow.
 */
export function writeFlowFrame(out: ByteWriter, flow: Uint8Array, keep: ReadonlySet<number> | undefined, nodeName: string, time: Timestamp | undefined): void {
  out.byte(0);
  const frameLen = out.reserve4();
  const start = out.len;
  if (keep) {
    // the masked flow's length comes before it: filtered into a scratch buffer first
    scratch.len = 0;
    keepFields(flow, keep, scratch);
    flow = scratch.buf.subarray(0, scratch.len);
  }
  out.byte((1 << 3) | 2);
  out.varint(flow.length);
  out.bytes(flow);
  if (nodeName) {
    const nb = nameBytes.getOrMake(nodeName, encodeName);
    out.varint((1000 << 3) | 2);
    out.varint(nb.length);
    out.bytes(nb);
  }
  if (time) {
    const secs = Number(time.seconds);
    out.varint((1001 << 3) | 2);
    if (secs < 0 || time.nanos < 0) {
      const tb = toBinary(TimestampSchema, time);
      out.varint(tb.length);
      out.bytes(tb);
    } else {
      out.varint((secs ? 1 + varintLen(secs) : 0) + (time.nanos ? 1 + varintLen(time.nanos) : 0));
      if (secs) {
        out.byte((1 << 3) | 0);
        out.varint(secs);
      }
      if (time.nanos) {
        out.byte((2 << 3) | 0);
        out.varint(time.nanos);
      }
    }
  }
  out.setUint32(frameLen, out.len - start);
}

/** One gRPC frame (flag 0, big-endian length) holding an encoded message. */
export function writeMessageFrame(out: ByteWriter, msg: Uint8Array): void {
  out.byte(0);
  out.setUint32(out.reserve4(), msg.length);
  out.bytes(msg);
}
