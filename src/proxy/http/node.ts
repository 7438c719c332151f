/**
 * The HTTP proxy on a node: listeners registered in the datapath's sockmap (egress and ingress
 * slots), policy looked up in the endpoint's MapState, access records sent to the agent's sink
 * (Hubble's L7 parser makes them flows) and to the OTLP exporter as spans.
 */
import type { Direction } from '../../policy/types.ts';
import type { Secret } from '../../api/types.ts';
import type { MapState } from '../../policy/types.ts';
import { lookupMapState } from '../../policy/lookup.ts';
import type { AccessLogSink, HttpAccessRecord } from '../../common/access-log.ts';
import { setIpTransparent } from '../../sys/sockopt.ts';
import { transparentUpstreamSocket, ensureTransparentReplyRule, removeTransparentReplyRule } from '../../sys/proxy-socket.ts';
import { createHttpProxy, type HttpProxy, type HttpFilterChain } from './proxy.ts';
import { OtlpExporter, otlpOptionsFromEnv } from './otlp.ts';
import type { ProxyEndpoint } from './types.ts';
import type { ProxyFamily } from '../../common/proxy-ports.ts';

export interface HttpProxyNodeDeps {
  nodeName: string;
  /** the sockmap slot of the HTTP proxy's listener for a direction and family (datapath's proxySlot('http', dir, 'TCP', family)) */
  slot(direction: Direction, family: ProxyFamily): number;
  /** registers (fd) or clears (null) a listener in the datapath's sockmap */
  setProxyListener(slot: number, fd: number | null): void;
  endpointByIp(ip: string): (ProxyEndpoint & { labels: string[] }) | undefined;
  /** identity of a non-endpoint address (node addresses → host, ipcache prefixes, else world) */
  identityOfOther(ip: string): number;
  mapState(endpointId: number): MapState | undefined;
  revision(): number;
  secret?(name: string, namespace: string | undefined): string | undefined;
  /** Secrets for headerMatches (read at start and on every change), when no `secret` is given */
  resources?: () => SecretStore | undefined;
  /** every access record (the agent hands them to Hubble's L7 parser) */
  emitRecord: AccessLogSink;
  /** emitRecord reads each record during the call only and keeps nothing of the object (HttpProxyOptions.recordsBorrowed) */
  recordsBorrowed?: boolean;
  /** OTLP/HTTP collector URL (membrane's otlpEndpoint setting); OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT in `otel` wins */
  otlpEndpoint?: string;
  /** the OpenTelemetry SDK's OTEL_* variables (config.otel) */
  otel?: Readonly<Record<string, string>>;
  listen?: { egress?: { host: string; port: number }; ingress?: { host: string; port: number } };
  /** IPv6 listeners too (enable-ipv6), in the IPv6 slots */
  ipv6?: boolean;
  configure?(chain: HttpFilterChain): void;
  /** name in the status rows (default `http`; the TLS SNI proxy reuses this wiring as `tls`) */
  name?: string;
  /** install/remove the transparent reply rule (default true; one owner per node) */
  replyRule?: boolean;
  logger?: { info(o: unknown, m?: string): void; warn(o: unknown, m?: string): void; debug(o: unknown, m?: string): void };
}

export interface SecretStore {
  list(kind: 'Secret'): Promise<unknown[]>;
  watch(cb: (ev: { type: 'put'; resource: { kind: string } } | { type: 'delete'; key: string }) => void): () => void;
}

/** A Secret's single value (headerMatches require exactly one entry; data is base64). */
function secretValue(s: Secret): string | undefined {
  const entries = [
    ...Object.values(s.stringData ?? {}),
    ...Object.values(s.data ?? {}).map((v) => Buffer.from(v, 'base64').toString('utf8')),
  ];
  return entries.length === 1 ? entries[0] : undefined;
}

export interface HttpProxyNode {
  proxy: HttpProxy;
  otlp: OtlpExporter | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** rows for `membrane status` (one per listener) */
  statusEntries(): { name: string; port: number; state: string }[];
}

export function createHttpProxyNode(deps: HttpProxyNodeDeps): HttpProxyNode {
  const identityOf = (ip: string) => deps.endpointByIp(ip)?.identity ?? deps.identityOfOther(ip);
  // the OpenTelemetry SDK's OTEL_* settings as an SDK reads them; a bad one stops the start with its reason
  const otlpOpts = otlpOptionsFromEnv({ ...deps.otel, ...(deps.otlpEndpoint ? { MEMBRANE_OTLP_ENDPOINT: deps.otlpEndpoint } : {}) }, { nodeName: deps.nodeName });
  const otlp = otlpOpts ? new OtlpExporter(otlpOpts) : undefined;
  const onRecord = (rec: HttpAccessRecord) => {
    deps.emitRecord(rec);
    otlp?.record(rec);
  };
  const proxy = createHttpProxy({
    policy: {
      endpointByIp: deps.endpointByIp,
      identityOf,
      lookup(endpointId, direction, remoteIdentity, port) {
        const ms = deps.mapState(endpointId);
        if (!ms) return { verdict: 'drop', l7: null };
        const r = lookupMapState(ms, direction, remoteIdentity, 6, port);
        return { verdict: r.verdict, l7: r.entry?.l7 ?? null };
      },
      revision: () => deps.revision() * 1000 + secretsRev,
      secret: deps.secret ?? ((name, ns) => secrets.get(`${ns ?? 'default'}/${name}`)),
    },
    onRecord,
    // the OTLP exporter reads a record during the call (spanOf) and keeps no part of the object
    ...(deps.recordsBorrowed ? { recordsBorrowed: true } : {}),
    setTransparent: setIpTransparent,
    upstreamSocket: transparentUpstreamSocket,
    ...(deps.listen ? { listen: deps.listen } : {}),
    ...(deps.ipv6 ? { ipv6: true } : {}),
    ...(deps.configure ? { configure: deps.configure } : {}),
    ...(deps.logger ? { logger: deps.logger } : {}),
  });
  const registered: number[] = [];
  const secrets = new Map<string, string | undefined>();
  let unwatchSecrets: (() => void) | undefined;
  let secretsRev = 0;
  const loadSecrets = async (store: SecretStore) => {
    const list = (await store.list('Secret')) as Secret[];
    secrets.clear();
    for (const x of list) secrets.set(`${x.metadata.namespace ?? 'default'}/${x.metadata.name}`, secretValue(x));
    secretsRev++; // connections look their policy (and decisions) up again
  };
  let ports: Partial<Record<Direction, number>> = {};
  return {
    proxy, otlp,
    statusEntries: () => (['egress', 'ingress'] as const).map((d) => ({
      name: `${deps.name ?? 'http'} (${d}, TCP)`, port: ports[d] ?? 0, state: ports[d] ? `listening, ${proxy.stats().connections} connections` : 'stopped',
    })),
    async start() {
      const store = deps.resources?.();
      if (store && !deps.secret) {
        await loadSecrets(store).catch((e: unknown) => deps.logger?.warn({ err: String(e) }, 'secrets for headerMatches'));
        unwatchSecrets = store.watch((ev) => {
          if (ev.type === 'delete' ? ev.key.startsWith('Secret/') || ev.key.includes('Secret') : ev.resource.kind === 'Secret') void loadSecrets(store).catch(() => {});
        });
      }
      if (deps.replyRule !== false) try {
        await ensureTransparentReplyRule();
      } catch (e) {
        deps.logger?.warn({ err: String(e) }, 'transparent reply rule (upstream replies may not reach the proxy)');
      }
      const l = await proxy.start();
      ports = { ...(l.egress ? { egress: l.egress.port } : {}), ...(l.ingress ? { ingress: l.ingress.port } : {}) };
      for (const dir of ['egress', 'ingress'] as const) {
        const x = l[dir];
        if (!x) continue;
        for (const [family, y] of [[4, x], [6, x.ipv6]] as const) {
          if (!y) continue;
          const slot = deps.slot(dir, family);
          deps.setProxyListener(slot, y.fd);
          registered.push(slot);
          deps.logger?.info({ direction: dir, slot, port: y.port, host: y.host }, `${deps.name ?? 'http'} proxy listening`);
        }
      }
    },
    async stop() {
      // the sockmap entries go with the listener sockets; clear them first (fail closed: 178)
      for (const s of registered.splice(0)) {
        try { deps.setProxyListener(s, null); } catch { /* datapath gone */ }
      }
      ports = {};
      unwatchSecrets?.();
      await proxy.stop();
      await otlp?.stop();
      if (deps.replyRule !== false) await removeTransparentReplyRule().catch(() => {});
    },
  };
}
