/**
 * The DNS proxy as bench/soak runs it: the production proxy (src/proxy/dns/proxy.ts) on
 * loopback with stand-in deps (a fixed endpoint, an allow-list decision, flows built and
 * counted, no hold), forwarding to an upstream on UP:PORT and answering from 127.0.0.3:PORT.
 * Prints `ready`, then `mem {…}` every MEMBRANE_BENCH_MEM_MS.
 *
 *   bin/node bench/dns/proxy-server.ts --port 18553 --upstream 127.0.0.2
 */
import { parseArgs } from 'node:util';
import { createDNSProxy } from '../../src/proxy/dns/proxy.ts';
import { createL7Parser } from '../../src/hubble/l7-parser.ts';
import { sampleMemory } from '../mem-sample.ts';

// the records become flows as the agent makes them (Hubble's L7 parser)
const parseL7 = createL7Parser({ nodeName: 'bench', resolver: { byIp: () => undefined, identityLabels: () => undefined } });

const { values } = parseArgs({ options: { port: { type: 'string', default: '18553' }, upstream: { type: 'string', default: '127.0.0.2' } } });
const PORT = Number(values.port);
const EP = { id: 7, identity: 300, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
let flows = 0;
const proxy = createDNSProxy({
  nodeName: 'bench', port: PORT, host: '127.0.0.1', dnsPort: PORT,
  endpointByIp: () => EP,
  originalDestination: () => '127.0.0.3',
  upstreamFor: () => values.upstream!,
  peerOf: () => ({ identity: 256 }),
  decide: (_ep, _id, _p, _port, qname) => qname.endsWith('.bench.lab.'),
  onAnswer: () => null,
  emit: (rec) => { parseL7(rec); flows++; },
});
await proxy.start();
sampleMemory(() => ({ queries: proxy.stats().queries, flows }));
console.log('ready');
process.on('SIGTERM', () => { void proxy.stop().then(() => process.exit(0)); });
process.on('SIGINT', () => process.exit(0));
