/** The client side of the agent API (api-server.ts): the CLI, the lab and tests call it. */
import { request } from 'node:http';
import { MembraneError } from '../common/errors.ts';
import type { ApiError } from './api-server.ts';

export class AgentCallError extends MembraneError {
  readonly issues: unknown[] | undefined;
  constructor(e: ApiError) {
    super(e.code, e.message, e.hint === undefined ? {} : { hint: e.hint });
    this.issues = e.issues;
  }
}

export function callAgent<T>(socketPath: string, method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs = 120_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = request({
      // a connection per call: Node's global agent keeps sockets alive, and one reused after the
      // server's keep-alive timeout (5 s) fails the next call with EPIPE (bench/dns's hold stats)
      socketPath, method, path, timeout: timeoutMs, agent: false,
      headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try { parsed = text ? JSON.parse(text) : {}; } catch { parsed = { code: 'AGENT_BAD_RESPONSE', message: text.slice(0, 200) }; }
        if ((res.statusCode ?? 500) >= 400) reject(new AgentCallError(parsed as ApiError));
        else resolve(parsed as T);
      });
    });
    req.on('timeout', () => req.destroy(new MembraneError('AGENT_TIMEOUT', `agent at ${socketPath} did not answer ${method} ${path} within ${timeoutMs} ms`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        reject(new MembraneError('AGENT_UNREACHABLE', `no agent is listening on ${socketPath}`, { hint: 'start the lab with `membrane up` (see `membrane status`)', cause: e }));
      } else reject(e);
    });
    req.end(payload);
  });
}
