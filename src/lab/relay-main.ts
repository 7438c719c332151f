/**
 * The lab's Hubble Relay process, on the lab host (root namespace): TCP 4245 (MEMBRANE_HUBBLE_RELAY_PORT;
 * 0 picks a free port) on loopback, mutual TLS with the Relay's server certificate and the Hubble CA
 * (src/lab/hubble-certs.ts) unless `--disable-server-tls`. It discovers nodes through Peer.Notify of any
 * agent and dials each one's 4244 with the Relay's client certificate. The lab host has no route into
 * node namespaces, so the bytes go through the node's root-only port-forward socket
 * (`<stateDir>/nodes/<node>/hubble-peer.sock`); TLS stays end to end with the agent.
 *
 *   bin/node src/lab/relay-main.ts --id=hubble-relay --state-dir=DIR --listen=127.0.0.1:4245 --ready=F
 *     [--disable-server-tls] [--disable-client-tls]
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createRelay } from '../hubble/relay/relay.ts';
import { HUBBLE_SERVER_PORT, hubbleServerName } from '../hubble/tls.ts';
import { hubbleTlsPaths } from './hubble-certs.ts';
import { nodeIp } from './names.ts';

const { values } = parseArgs({
  options: {
    id: { type: 'string', default: '' },
    'state-dir': { type: 'string' },
    listen: { type: 'string', default: `127.0.0.1:4245` },
    ready: { type: 'string' },
    'disable-server-tls': { type: 'boolean', default: false },
    'disable-client-tls': { type: 'boolean', default: false },
    // the default port taken (another lab's Relay): any free port, said in the log and the address file
    'fallback-any-port': { type: 'boolean', default: false },
  },
});
const stateDir = values['state-dir']!;
const certs = hubbleTlsPaths(stateDir);
const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(values.listen!);
if (!m) throw new Error(`--listen ${values.listen}: want host:port`);
const peerSocket = (node: string) => join(stateDir, 'nodes', node, 'hubble-peer.sock');
const log = (msg: string) => process.stdout.write(`${new Date().toISOString()} ${msg}\n`);

const makeRelay = (listenPort: number) => createRelay({
  listenHost: m[1]!, listenPort,
  security: values['disable-server-tls'] ? { plaintext: true } : { tls: { ...certs.relayServer, clientCaFiles: [certs.caCert] } },
  ...(values['disable-client-tls'] ? {} : { clientTls: { caFiles: [certs.caCert], certFile: certs.clientCert, keyFile: certs.clientKey } }),
  // any node's agent answers Peer.Notify with the whole cluster
  peerService: () => {
    let nodes: string[] = [];
    try {
      nodes = readdirSync(join(stateDir, 'nodes')).filter((n) => /^node\d+$/.test(n) && existsSync(peerSocket(n)));
    } catch { /* no node yet */ }
    return nodes.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).map((n) => ({
      name: n, address: `${nodeIp(Number(n.slice(4)))}:${HUBBLE_SERVER_PORT}`, serverName: hubbleServerName(n),
    }));
  },
  dial: (p) => connect(peerSocket(p.name)),
  version: 'membrane-relay v0.1.0',
  log,
});
let relay = makeRelay(Number(m[2]));
try {
  await relay.start();
} catch (e) {
  if (!values['fallback-any-port'] || !/EADDRINUSE/.test((e as Error).message)) throw e;
  log(`${values.listen} is in use (another lab's Relay?): serving on a free port instead`);
  relay = makeRelay(0);
  await relay.start();
}
const a = relay.address()!;
writeFileSync(join(stateDir, 'relay', 'address'), `${a.host}:${a.port}\n`);
log(`hubble relay serving on ${a.host}:${a.port} (${values['disable-server-tls'] ? 'PLAIN TEXT' : 'mutual TLS'})`);
if (values.ready) writeFileSync(values.ready, 'ok');
const stop = () => { void relay.stop().then(() => process.exit(0)); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
