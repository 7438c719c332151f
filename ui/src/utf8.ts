/**
 * Short protobuf strings decoded in JavaScript. Protobuf-ES decodes every string field with
 * TextDecoder; a flow carries a dozen or two short ASCII strings (labels, pod and namespace
 * names, uuid, summary), and for strings that short each TextDecoder call costs more than the
 * text (a call into the browser and a new string): in the 10,000-flow replay's Chromium CPU
 * profile decodeUtf8 was the flow worker's largest self time after the decode loop itself.
 * ASCII up to SHORT bytes is read here; anything else still goes to TextDecoder (protobufjs reads
 * strings in JavaScript for the same reason).
 */
import { configureTextEncoding, getTextEncoding } from '@bufbuild/protobuf/wire';

const SHORT = 64;

/** `bytes` as text when they are ASCII and at most SHORT long; undefined otherwise (TextDecoder's turn). */
export function decodeShortAscii(bytes: Uint8Array): string | undefined {
  const n = bytes.length;
  if (n > SHORT) return undefined;
  for (let i = 0; i < n; i++) if (bytes[i]! >= 0x80) return undefined;
  return String.fromCharCode.apply(null, bytes as unknown as number[]);
}

/** Makes this bundle's copy of Protobuf-ES decode strings with decodeShortAscii first (strict or not: ASCII is always valid UTF-8). */
export function installShortUtf8(): void {
  const base = getTextEncoding();
  configureTextEncoding({
    encodeUtf8: base.encodeUtf8,
    encodeUtf8Into: base.encodeUtf8Into,
    checkUtf8: base.checkUtf8,
    decodeUtf8: (bytes, strict) => decodeShortAscii(bytes) ?? base.decodeUtf8(bytes, strict),
  });
}
