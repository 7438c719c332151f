/**
 * The HTTP proxy with the AI filter on loopback, in front of the lab's own AI API server
 * (src/lab/world-ai.ts, chosen by the Host header), AIPolicies applied through a real resource
 * store over the memory kvstore, records turned into Hubble flows.
 */
import http from 'node:http';
import net from 'node:net';
import { parse } from 'yaml';
import { createHttpProxy, type HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import { createL7Parser } from '../../../../src/hubble/l7-parser.ts';
import type { ProxyEndpoint } from '../../../../src/proxy/http/types.ts';
import type { HttpAccessRecord } from '../../../../src/common/access-log.ts';
import { createAINode, type AINode } from '../../../../src/proxy/ai/node.ts';
import { openMemoryStore } from '../../../../src/kvstore/memory.ts';
import { createResourceStore, type ResourceStore } from '../../../../src/agent/resources.ts';
import { loadText } from '../../../../src/api/load.ts';
import { policyCheck } from '../../../../src/policy/check.ts';
import { aiAnswer, writeSse } from '../../../../src/lab/world-ai.ts';
import type { Flow } from '../../../../src/hubble/gen/flow/flow_pb.js';
import { Registry } from 'prom-client';

export interface AIHarness {
  proxy: HttpProxy;
  ai: AINode;
  port: number;
  records: HttpAccessRecord[];
  flows: Flow[];
  registry: Registry;
  /** what the upstream received */
  upstream: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[];
  /** the endpoint the next connections come from */
  endpoint: ProxyEndpoint;
  /** DNS names of the destination (the filter's namesForIp) */
  dstNames: string[];
  apply(yaml: string): Promise<void>;
  remove(kind: string, namespace: string, name: string): Promise<void>;
  close(): Promise<void>;
}

export const CHATBOT: ProxyEndpoint = { id: 7, identity: 1000, namespace: 'shop', pod: 'chatbot-7d9f-abcde', labels: ['k8s:app=chatbot', 'k8s:io.kubernetes.pod.namespace=shop'], workloads: [{ name: 'chatbot', kind: 'Deployment' }] };

export async function startAIHarness(opts: { stateFile?: string; maxBodyBytes?: number; maxHeldBytes?: number; identityLabels?: (id: number) => string[] | undefined } = {}): Promise<AIHarness> {
  const upstreamSeen: AIHarness['upstream'] = [];
  const upstream = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      upstreamSeen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      const host = (req.headers.host ?? '').replace(/:\d+$/, '');
      const a = aiAnswer(host, req.method!, req.url!, body, req);
      if (a?.kind === 'sse') { void writeSse(res, a); return; }
      const text = JSON.stringify(a ? a.body : { echo: true });
      res.writeHead(a?.status ?? 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  upstream.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upstreamPort = (upstream.address() as net.AddressInfo).port;

  const kv = await openMemoryStore();
  const store: ResourceStore = createResourceStore(kv);
  const registry = new Registry();
  const h = {} as AIHarness;
  h.endpoint = CHATBOT;
  h.dstNames = [];
  const ai = createAINode({
    resources: () => store,
    ...(opts.stateFile ? { stateFile: opts.stateFile } : {}),
    identityLabels: opts.identityLabels ?? (() => ['k8s:app=chatbot', 'k8s:io.kubernetes.pod.namespace=shop']),
    namesForIp: () => h.dstNames,
    ...(opts.maxBodyBytes ? { maxBodyBytes: opts.maxBodyBytes } : {}),
    registry,
  });
  await ai.start();
  const records: HttpAccessRecord[] = [];
  const flows: Flow[] = [];
  const build = createL7Parser({ nodeName: 'test', resolver: { byIp: () => undefined, identityLabels: () => ['reserved:world'] } });
  const proxy = createHttpProxy({
    policy: {
      endpointByIp: () => h.endpoint,
      identityOf: () => 2,
      lookup: () => ({ verdict: 'redirect', l7: { parser: 'http', perSelector: [{ selector: 'all', identities: 'all', http: null, origins: [] }] } }),
      revision: () => 0,
    },
    onRecord: (r) => { records.push(r); flows.push(build(r)); },
    listen: { egress: { host: '127.0.0.1', port: 0 } },
    upstreamOverride: { host: '127.0.0.1', port: upstreamPort },
    configure: (chain) => ai.configureHttp(chain),
    ...(opts.maxHeldBytes ? { maxHeldBytes: opts.maxHeldBytes } : {}),
  });
  const l = await proxy.start();
  Object.assign(h, {
    proxy, ai, port: l.egress!.port, records, flows, registry, upstream: upstreamSeen,
    async apply(yaml: string) {
      const r = loadText(yaml, 'test.yaml', { policyCheck });
      if (r.issues.length) throw new Error(JSON.stringify(r.issues));
      await store.commit(r.resources);
    },
    async remove(kind: string, namespace: string, name: string) {
      await store.commitDelete([{ kind, metadata: { name, namespace } }]);
    },
    async close() {
      await proxy.stop();
      await ai.stop();
      upstream.closeAllConnections();
      await new Promise<void>((r) => upstream.close(() => r()));
      await kv.close();
    },
  });
  return h;
}

export function aiPolicy(name: string, spec: Record<string, unknown>, namespace = 'shop'): string {
  const doc = { apiVersion: 'membrane.dev/v1alpha1', kind: 'AIPolicy', metadata: { name, namespace }, spec: { endpointSelector: { matchLabels: { app: 'chatbot' } }, ...spec } };
  return JSON.stringify(parse(JSON.stringify(doc)));
}

export interface Reply { status: number; headers: Record<string, string>; body: string; raw: string }

/** Parses the responses of a raw exchange (content-length and chunked bodies). */
export function parseResponses(text: string): Reply[] {
  const out: Reply[] = [];
  let i = 0;
  while (i < text.length) {
    const end = text.indexOf('\r\n\r\n', i);
    if (end < 0) break;
    const lines = text.slice(i, end).split('\r\n');
    const status = Number(lines[0]!.split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) { const c = l.indexOf(':'); headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim(); }
    let j = end + 4;
    let body = '';
    if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const le = text.indexOf('\r\n', j);
        const n = parseInt(text.slice(j, le), 16);
        j = le + 2;
        if (n === 0) { j += 2; break; }
        body += text.slice(j, j + n);
        j += n + 2;
      }
    } else if (headers['content-length']) {
      const n = Number(headers['content-length']);
      body = Buffer.from(text.slice(j), 'latin1').subarray(0, n).toString('latin1');
      j += body.length;
    }
    out.push({ status, headers, body: Buffer.from(body, 'latin1').toString('utf8'), raw: text.slice(i, j) });
    if (status === 100) { i = j; continue; }
    i = j;
  }
  return out;
}

export function post(path: string, body: string | object, extra = '', host = 'api.openai.com'): string {
  const b = typeof body === 'string' ? body : JSON.stringify(body);
  return `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nAccept-Encoding: gzip, br\r\nContent-Length: ${Buffer.byteLength(b)}\r\n${extra}\r\n${b}`;
}
