/**
 * The lab's Hubble certificates, issued as Cilium's install issues them (Helm `tls-helm`, certgen):
 * a Hubble CA; per node a server certificate for `<node>.<cluster>.hubble-grpc.cilium.io` (the name
 * Relay and the CLI verify; Helm issues one `*.<cluster>…` wildcard, one name per node is
 * narrower); one client certificate `*.hubble-relay.cilium.io` (Cilium's Relay client name) for
 * the hubble CLI, Relay and UI. The agent accepts on TCP 4244 only clients this CA signed.
 *
 *   <stateDir>/hubble-tls/                 0700, keys 0600
 *     ca.crt ca.key                         the Hubble CA (also the agents' client CA)
 *     client.crt client.key                 client certificate
 *     relay/server.crt relay/server.key     the Relay's server certificate (`*.hubble-relay.cilium.io`)
 *     <node>/server.crt <node>/server.key   node <node>'s Observer (Cilium's /var/lib/cilium/tls/hubble/)
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { hubbleServerName, type HubbleClientTlsFiles, type HubbleServerTlsFiles } from '../hubble/tls.ts';
import { ensureCA, issueCert, type LabCA } from './ca.ts';
import { writeFileAtomic } from '../common/atomic-file.ts';

export const HUBBLE_CLIENT_NAME = '*.hubble-relay.cilium.io';
/** The name a client of the lab Relay verifies on its certificate (it carries `*.hubble-relay.cilium.io`). */
export const RELAY_SERVER_NAME = 'relay.hubble-relay.cilium.io';

/** What a client of the lab Relay presents and checks (`membrane observe`, `status`, `ui`): the lab's Hubble client certificate. */
export function relayClientTls(stateDir: string): HubbleClientTlsFiles {
  const t = hubbleTlsPaths(stateDir);
  return { caFiles: [t.caCert], certFile: t.clientCert, keyFile: t.clientKey, serverName: RELAY_SERVER_NAME };
}

export interface HubbleTlsPaths {
  dir: string;
  caCert: string;
  clientCert: string;
  clientKey: string;
  /** the Relay's own server certificate (Cilium's hubble-relay-server-certs, `*.hubble-relay.cilium.io`) */
  relayServer: { certFile: string; keyFile: string };
  /** what node `node`'s agent loads */
  server(node: string): HubbleServerTlsFiles;
}

export function hubbleTlsPaths(stateDir: string): HubbleTlsPaths {
  const dir = join(stateDir, 'hubble-tls');
  const caCert = join(dir, 'ca.crt');
  return {
    dir, caCert,
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
    relayServer: { certFile: join(dir, 'relay', 'server.crt'), keyFile: join(dir, 'relay', 'server.key') },
    server: (node) => ({ certFile: join(dir, node, 'server.crt'), keyFile: join(dir, node, 'server.key'), clientCaFiles: [caCert] }),
  };
}

/** A certificate issued by `ca` (one made before the CA was replaced is not). */
function issuedBy(certFile: string, ca: LabCA): boolean {
  try {
    return new X509Certificate(readFileSync(certFile)).verify(new X509Certificate(ca.certPem).publicKey);
  } catch {
    return false;
  }
}

async function writePair(certFile: string, keyFile: string, pair: { cert: string; key: string }): Promise<void> {
  await writeFileAtomic(keyFile, pair.key, { mode: 0o600 });
  await writeFileAtomic(certFile, pair.cert);
}

/** Creates what is missing: the CA, the client certificate, each node's server certificate (idempotent). */
export async function ensureHubbleCerts(stateDir: string, nodes: string[], clusterName = 'default'): Promise<HubbleTlsPaths> {
  const p = hubbleTlsPaths(stateDir);
  const ca = await ensureCA(p.dir, 'CN=membrane hubble CA, O=membrane');
  const fresh = (cert: string, key: string) => existsSync(key) && existsSync(cert) && issuedBy(cert, ca);
  if (!fresh(p.clientCert, p.clientKey)) {
    await writePair(p.clientCert, p.clientKey, await issueCert(ca, { commonName: HUBBLE_CLIENT_NAME, names: [HUBBLE_CLIENT_NAME], usage: 'client' }));
  }
  if (!fresh(p.relayServer.certFile, p.relayServer.keyFile)) {
    await mkdir(join(p.dir, 'relay'), { recursive: true, mode: 0o700 });
    await writePair(p.relayServer.certFile, p.relayServer.keyFile, await issueCert(ca, { commonName: HUBBLE_CLIENT_NAME, names: [HUBBLE_CLIENT_NAME], usage: 'server' }));
  }
  for (const node of nodes) {
    const f = p.server(node);
    if (fresh(f.certFile, f.keyFile)) continue;
    await mkdir(join(p.dir, node), { recursive: true, mode: 0o700 });
    const name = hubbleServerName(node, clusterName);
    await writePair(f.certFile, f.keyFile, await issueCert(ca, { commonName: name, names: [name], usage: 'server' }));
  }
  return p;
}
