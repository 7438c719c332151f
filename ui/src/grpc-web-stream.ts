/**
 * Observer.GetFlows over gRPC-web (the UI server relays it to the Observer, src/ui/grpc-web-proxy.ts),
 * read frame by frame: every whole message in a network chunk is decoded and handed over in one
 * synchronous loop. connect-web's streaming client hands messages out through an async iterator,
 * several promise hops per message; at 2,000 flows/s and for a 10,000-flow replay those hops and
 * their garbage were a large part of the flow worker's CPU time (Chromium CPU profile, bench/ui).
 *
 * Framing (gRPC over HTTP, gRPC-web): 1 flag byte, 4-byte big-endian length, the message; a frame
 * with flag 0x80 carries the trailers as `key: value\r\n` lines. An error before any message may
 * come as a trailers-only response: grpc-status in the HTTP headers.
 */
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { GetFlowsRequestSchema, GetFlowsResponseSchema, type GetFlowsRequest, type GetFlowsResponse } from '../../src/hubble/gen/observer/observer_pb.js';

const PATH = '/observer.Observer/GetFlows';
/** the largest message accepted (the server's own limit for a flow is far below) */
const MAX_MESSAGE = 4 << 20;

function statusError(status: string | null, message: string | null): ConnectError | undefined {
  const code = Number(status ?? Code.Unknown);
  if (code === 0) return undefined;
  let text = message ?? '';
  try {
    text = decodeURIComponent(text);
  } catch { /* as sent */ }
  return new ConnectError(text || `gRPC status ${code}`, Number.isInteger(code) && code > 0 && code <= 16 ? code : Code.Unknown);
}

function trailers(bytes: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of new TextDecoder().decode(bytes).split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  return out;
}

/**
 * Calls GetFlows and gives each response to `each`, synchronously, in order, with the message's
 * bytes (a view into the reader's buffer, valid only during the call: copy what is kept).
 * Resolves when the server ends the stream with status OK; throws a ConnectError otherwise (or
 * the abort's error).
 */
export async function getFlows(origin: string, req: GetFlowsRequest, each: (r: GetFlowsResponse, bytes: Uint8Array) => void, signal: AbortSignal): Promise<void> {
  const msg = toBinary(GetFlowsRequestSchema, req);
  const body = new Uint8Array(5 + msg.length);
  new DataView(body.buffer).setUint32(1, msg.length);
  body.set(msg, 5);
  const res = await fetch(origin + PATH, {
    method: 'POST', body, signal,
    headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', accept: 'application/grpc-web+proto' },
  });
  if (!res.ok) throw new ConnectError(`HTTP ${res.status} from ${PATH}`, Code.Unavailable);
  const only = statusError(res.headers.get('grpc-status') ?? '0', res.headers.get('grpc-message'));
  if (only) throw only;
  if (!res.body) throw new ConnectError('the response has no body', Code.Unavailable);
  const reader = res.body.getReader();
  let buf = new Uint8Array(64 * 1024);
  let len = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (len + value.length > buf.length) {
      const next = new Uint8Array(Math.max(buf.length * 2, len + value.length));
      next.set(buf.subarray(0, len));
      buf = next;
    }
    buf.set(value, len);
    len += value.length;
    const view = new DataView(buf.buffer, buf.byteOffset, len);
    let off = 0;
    while (len - off >= 5) {
      const flag = buf[off]!;
      const size = view.getUint32(off + 1);
      if (size > MAX_MESSAGE) throw new ConnectError(`a message of ${size} bytes from ${PATH}`, Code.ResourceExhausted);
      if (len - off - 5 < size) break;
      const frame = buf.subarray(off + 5, off + 5 + size);
      off += 5 + size;
      if (flag & 0x80) {
        await reader.cancel().catch(() => {});
        const t = trailers(frame);
        const err = statusError(t.get('grpc-status') ?? null, t.get('grpc-message') ?? null);
        if (err) throw err;
        return;
      }
      if (flag & 0x01) throw new ConnectError('a compressed message (none was asked for)', Code.Internal);
      each(fromBinary(GetFlowsResponseSchema, frame), frame);
    }
    // keep the partial frame at the front
    if (off > 0) {
      buf.copyWithin(0, off, len);
      len -= off;
    }
  }
  throw new ConnectError(`${PATH} ended without a status`, Code.Unavailable);
}
