/**
 * TLS on a node: the SNI proxy on the datapath's `tls` slot (serverNames without L7 rules) and
 * the interception filter for the HTTP proxy (terminatingTLS/originatingTLS with HTTP rules),
 * sharing the agent's Secrets and the access record sink.
 *
 * The SNI proxy is the HTTP proxy's machinery (listeners in the sockmap, peers, MapState lookup,
 * transparent upstream with the source identity's mark) with the SNI network filter in front:
 * it never parses HTTP, it passes the connection through once the ClientHello is decided.
 */
import type { Direction } from '../../policy/types.ts';
import { createHttpProxyNode, type HttpProxyNode, type HttpProxyNodeDeps } from '../http/node.ts';
import type { HttpFilterChain } from '../http/proxy.ts';
import type { TlsAccessRecord } from '../../common/access-log.ts';
import { DEFAULT_PROXY_PORTS, proxyListenHost, type ProxyFamily } from '../../common/proxy-ports.ts';
import { createSniFilter } from './sni-filter.ts';
import { createInterceptFilter } from './intercept.ts';
import { TlsSecrets, type SecretStore } from './secrets.ts';

export interface TlsNodeDeps extends Omit<HttpProxyNodeDeps, 'slot' | 'configure' | 'listen' | 'name' | 'replyRule' | 'resources'> {
  /** the sockmap slot of the TLS proxy's listener for a direction and family (datapath's proxySlot('tls', dir, 'TCP', family)) */
  slot(direction: Direction, family: ProxyFamily): number;
  resources?: () => SecretStore | undefined;
  listen?: { egress?: { host: string; port: number }; ingress?: { host: string; port: number } };
}

export interface TlsNode {
  sni: HttpProxyNode;
  secrets: TlsSecrets;
  /** adds the interception filter to the HTTP proxy's chain (pass as its `configure`) */
  configureHttp(chain: HttpFilterChain): void;
  start(): Promise<void>;
  stop(): Promise<void>;
  statusEntries(): { name: string; port: number; state: string }[];
}

export function createTlsNode(deps: TlsNodeDeps): TlsNode {
  const secrets = new TlsSecrets();
  const onRecord = (r: TlsAccessRecord) => deps.emitRecord(r);
  const tlsPort = DEFAULT_PROXY_PORTS.tls;
  const { resources: _secretsOnly, ...proxyDeps } = deps;
  const sni = createHttpProxyNode({
    ...proxyDeps,
    name: 'tls',
    replyRule: false, // the HTTP proxy owns the node's transparent reply rule
    listen: deps.listen ?? { egress: { host: proxyListenHost(4), port: tlsPort }, ingress: { host: proxyListenHost(4), port: tlsPort + 1 } },
    configure: (chain) => { chain.addNetwork(createSniFilter({ onRecord, proxyPort: tlsPort })); },
    ...(deps.logger ? { logger: deps.logger } : {}),
  });
  return {
    sni, secrets,
    configureHttp(chain) {
      chain.addNetwork(createInterceptFilter({ secrets, onRecord, proxyPort: DEFAULT_PROXY_PORTS.http, ...(deps.logger ? { logger: deps.logger } : {}) }));
    },
    async start() {
      await secrets.start(deps.resources?.(), deps.logger);
      await sni.start();
    },
    async stop() {
      secrets.stop();
      await sni.stop();
    },
    statusEntries: () => sni.statusEntries(),
  };
}
