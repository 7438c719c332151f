/**
 * An AI call's facts as a flow's `extensions`, written straight into protobuf wire format (the L7
 * parser's per-request path: the generic fromJson + anyPack path cost more than the rest of the flow).
 */
import type { Any } from '@bufbuild/protobuf/wkt';
import type { AccessAI } from '../common/access-log.ts';

/**
 * An AI call's facts as the flow's `extensions` (Hubble's field for data beyond its schema): a
 * google.protobuf.Any holding a Struct `{ai: {...}}`, which every protobuf runtime can print
 * (`hubble observe -o json` shows it as JSON), unlike a type of our own.
 */
export function aiExtension(ai: AccessAI): Any {
  const w = new StructWriter();
  const inner = w.begin();
  w.string('provider', ai.provider);
  w.string('operation', ai.operation);
  w.string('model', ai.model);
  w.bool('stream', ai.stream);
  if (ai.policy) w.string('policy', ai.policy);
  if (ai.promptTokens !== undefined) w.number('prompt_tokens', ai.promptTokens);
  if (ai.completionTokens !== undefined) w.number('completion_tokens', ai.completionTokens);
  if (ai.promptTokens !== undefined || ai.completionTokens !== undefined) w.number('total_tokens', (ai.promptTokens ?? 0) + (ai.completionTokens ?? 0));
  if (ai.usage) w.string('usage', ai.usage);
  if (ai.firstByteNs !== undefined) w.number('time_to_first_byte_ns', ai.firstByteNs);
  const ext = new StructWriter();
  ext.struct('ai', w.bytes(inner));
  return { $typeName: 'google.protobuf.Any', typeUrl: 'type.googleapis.com/google.protobuf.Struct', value: ext.bytes(0) };
}

/**
 * google.protobuf.Struct in the wire format, written directly into one buffer (an AI flow's
 * extension; the generic fromJson + anyPack path cost more than the rest of the flow). Struct {
 * map<string, Value> fields = 1 }: each entry {key = 1, value = 2}; Value: number_value = 2
 * (double), string_value = 3, bool_value = 4, struct_value = 5.
 */
class StructWriter {
  private buf = Buffer.allocUnsafe(512);
  private n = 0;
  begin(): number {
    return this.n;
  }
  private room(k: number): void {
    if (this.n + k <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.n + k));
    this.buf.copy(b, 0, 0, this.n);
    this.buf = b;
  }
  private varint(v: number): void {
    while (v > 0x7f) { this.buf[this.n++] = (v & 0x7f) | 0x80; v >>>= 7; }
    this.buf[this.n++] = v;
  }
  /** one map entry whose Value holds field `valueTag` with `payloadLen` bytes (their length prefix included by the caller's `len`) */
  private entry(key: string, valueTag: number, payloadLen: number, lengthPrefixed: boolean): void {
    const keyLen = Buffer.byteLength(key);
    const valueLen = 1 + (lengthPrefixed ? varintSize(payloadLen) : 0) + payloadLen;
    const entryLen = 1 + varintSize(keyLen) + keyLen + 1 + varintSize(valueLen) + valueLen;
    this.room(1 + varintSize(entryLen) + entryLen);
    this.buf[this.n++] = 0x0a;
    this.varint(entryLen);
    this.buf[this.n++] = 0x0a;
    this.varint(keyLen);
    this.n += this.buf.write(key, this.n, 'utf8');
    this.buf[this.n++] = 0x12;
    this.varint(valueLen);
    this.buf[this.n++] = valueTag;
    if (lengthPrefixed) this.varint(payloadLen);
  }
  string(key: string, v: string): void {
    this.entry(key, 0x1a, Buffer.byteLength(v), true);
    this.n += this.buf.write(v, this.n, 'utf8');
  }
  bool(key: string, v: boolean): void {
    this.entry(key, 0x20, 1, false);
    this.buf[this.n++] = v ? 1 : 0;
  }
  number(key: string, v: number): void {
    this.entry(key, 0x11, 8, false);
    this.n = this.buf.writeDoubleLE(v, this.n);
  }
  struct(key: string, inner: Uint8Array): void {
    this.entry(key, 0x2a, inner.length, true);
    this.buf.set(inner, this.n);
    this.n += inner.length;
  }
  bytes(from: number): Uint8Array {
    return new Uint8Array(this.buf.subarray(from, this.n));
  }
}

function varintSize(v: number): number {
  let n = 1;
  while (v > 0x7f) { v >>>= 7; n++; }
  return n;
}
