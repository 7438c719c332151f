/**
 * 16- and 32-bit reads and writes of a Buffer's bytes without Buffer's checked methods, for the
 * datagram paths. Buffer's readUInt16BE, writeUInt32LE and kin check the offset through Node's
 * hideStackFrames wrapper, whose rest parameters are a new array per call wherever the caller
 * runs below V8's optimizing tier (Maglev, baseline): ~64 B per call (an in-process probe of
 * SendBatch.pushCopy + writeUInt16BE with --no-turbofan: 64 B per call, 0 with TurboFan), and
 * bench/dns/loopback.ts --alloc put 35-63 B per query at the DNS proxy's sendToClient in the runs
 * where it had not reached TurboFan yet. The caller has checked the bounds: a read past the end
 * reads 0 bytes where Buffer's would throw.
 */

/** The big-endian 16-bit number at `b[o]`. */
export function u16be(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

/** The little-endian 16-bit number at `b[o]`. */
export function u16le(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

/** `b[o, o + 2)` := `v` (0 … 65535), big-endian. */
export function putU16be(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v & 255;
}

/** `b[o, o + 4)` := `v` (0 … 2^32 - 1), little-endian. */
export function putU32le(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 255;
  b[o + 1] = (v >>> 8) & 255;
  b[o + 2] = (v >>> 16) & 255;
  b[o + 3] = v >>> 24;
}
