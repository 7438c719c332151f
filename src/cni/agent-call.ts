/**
 * The plugin's one request to the host-mode agent: HTTP/1.0 over the agent's unix socket with
 * node:net, not node:http. The runtime starts membrane-cni once per container and loading
 * node:http costs the plugin's start about as much CPU as Node's own start (measured: 90 ms for
 * an empty module, 190 ms with `import 'node:http'`, 100 ms with node:net: p50 CPU of 12 interleaved
 * runs each under /usr/bin/time, 2-core machine at load ~20). The agent's API server is the same as for every other
 * client (src/agent/api-server.ts); errors mirror src/agent/api-client.ts's codes.
 */
import { connect } from 'node:net';
import { MembraneError } from '../common/errors.ts';

/** An error answer of the agent's API ({code, message, hint}). */
export class AgentReplyError extends MembraneError {}

/** HTTP/1.0: the server closes after its answer and sends no chunked encoding, so the body is all after the head. */
export function parseReply(raw: Buffer): { status: number; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) throw new MembraneError('AGENT_BAD_RESPONSE', 'the agent closed the connection before a complete answer');
  const head = raw.subarray(0, end).toString('latin1');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
  if (!m) throw new MembraneError('AGENT_BAD_RESPONSE', `not an HTTP answer: ${head.slice(0, 60)}`);
  let body = raw.subarray(end + 4);
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    const parts: Buffer[] = [];
    for (let i = 0; ;) {
      const eol = body.indexOf('\r\n', i);
      if (eol < 0) break;
      const n = parseInt(body.subarray(i, eol).toString('latin1'), 16);
      if (!(n > 0)) break;
      parts.push(body.subarray(eol + 2, eol + 2 + n));
      i = eol + 2 + n + 2;
    }
    body = Buffer.concat(parts);
  }
  return { status: Number(m[1]), body: body.toString('utf8') };
}

export function agentCall<T>(socketPath: string, path: string, body: unknown, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    const chunks: Buffer[] = [];
    const sock = connect(socketPath);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new MembraneError('AGENT_TIMEOUT', `agent at ${socketPath} did not answer POST ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => {
      // no half-close: HTTP/1.0 means the agent closes once it has answered
      sock.write(Buffer.concat([Buffer.from(`POST ${path} HTTP/1.0\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: ${payload.length}\r\n\r\n`), payload]));
    });
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        reject(new MembraneError('AGENT_UNREACHABLE', `no agent is listening on ${socketPath}`, { cause: e }));
      } else reject(e);
    });
    sock.on('close', (hadError) => {
      clearTimeout(timer);
      if (hadError) return;
      try {
        const r = parseReply(Buffer.concat(chunks));
        let parsed: unknown;
        try { parsed = r.body ? JSON.parse(r.body) : {}; } catch { parsed = { code: 'AGENT_BAD_RESPONSE', message: r.body.slice(0, 200) }; }
        if (r.status >= 400) {
          const e = parsed as { code?: string; message?: string; hint?: string };
          reject(new AgentReplyError(e.code ?? 'AGENT_INTERNAL', e.message ?? `HTTP ${r.status}`, e.hint === undefined ? {} : { hint: e.hint }));
        } else resolve(parsed as T);
      } catch (e) {
        reject(e);
      }
    });
  });
}
