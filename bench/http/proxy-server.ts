/**
 * The membrane HTTP proxy as the bench runs it: the production connection code, L7 policy
 * filter and flow path (access record → Hubble flow → http/flow metrics → ring), with a policy of
 * N HTTP rules (the request matches the last one), forwarding to a fixed origin. --body adds, after
 * them, the rules bench/http/body.ts's requests match (method and path: the body is not inspected).
 *
 *   bin/node bench/http/proxy-server.ts --port 18081 --origin 18080 --rules 100 [--body]
 */
import { parseArgs } from 'node:util';
import type { L7Policy } from '../../src/policy/types.ts';
import { startBenchProxy } from '../proxy-harness.ts';

const { values } = parseArgs({ options: { port: { type: 'string', default: '18081' }, origin: { type: 'string', default: '18080' }, rules: { type: 'string', default: '100' }, body: { type: 'boolean', default: false } } });
const n = Number(values.rules);
const policy: L7Policy = {
  parser: 'http',
  perSelector: [{
    selector: 'bench', identities: 'all', origins: [],
    http: [
      ...Array.from({ length: n }, (_, i) => ({ method: 'GET', path: `/api/v1/resource${i}` })),
      ...(values.body ? [{ method: 'GET', path: '/body/(download|chunked)/[0-9]+' }, { method: 'POST', path: '/body/upload/[0-9]+' }] : []),
    ],
  }],
};
await startBenchProxy({ port: Number(values.port), origin: Number(values.origin), policy, remote: { identity: 2000, labels: ['k8s:app=server'] } });
