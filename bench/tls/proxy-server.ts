/**
 * The membrane TLS proxies as the bench runs them: the production connection code with the SNI
 * filter (`--mode sni`: ClientHello read and decided, bytes passed through) or the interception
 * filter in the HTTP proxy (`--mode intercept`: leaf issued from the interception CA, HTTP rules,
 * TLS to the origin verified against its CA), flows into a ring with metrics, made where
 * bench/proxy-harness.ts makes them (by default an agent stand-in: the proxy in its own process).
 *
 *   bin/node bench/tls/proxy-server.ts --mode sni|intercept --port P --origin O --dir D
 * D holds ica.crt/ica.key (interception CA) and ca.crt (the origin's CA).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { TlsAccessRecord } from '../../src/common/access-log.ts';
import { createSniFilter } from '../../src/proxy/tls/sni-filter.ts';
import { createInterceptFilter } from '../../src/proxy/tls/intercept.ts';
import { TlsSecrets } from '../../src/proxy/tls/secrets.ts';
import type { L7Policy } from '../../src/policy/types.ts';
import { startBenchProxy } from '../proxy-harness.ts';

const { values } = parseArgs({ options: { mode: { type: 'string', default: 'sni' }, port: { type: 'string' }, origin: { type: 'string' }, dir: { type: 'string' }, name: { type: 'string', default: 'api.bench.test' } } });
const dir = values.dir!;
const name = values.name!;
const policy: L7Policy = values.mode === 'sni'
  ? { parser: 'tls', perSelector: [{ selector: 'bench', identities: 'all', origins: [], serverNames: ['api.openai.com', `*.${name.split('.').slice(1).join('.')}`, name] }] }
  : {
    parser: 'http',
    perSelector: [{
      selector: 'bench', identities: 'all', origins: [], serverNames: [name],
      http: [{ method: 'POST', path: '/v1/chat/completions' }, { method: 'GET', path: '/v1/models' }],
      terminatingTLS: { secret: { name: 'intercept' } }, originatingTLS: { secret: { name: 'origin-ca' } },
    }],
  };
const secrets = new TlsSecrets();
secrets.set('default', 'intercept', { 'tls.crt': readFileSync(join(dir, 'ica.crt'), 'utf8'), 'tls.key': readFileSync(join(dir, 'ica.key'), 'utf8') });
secrets.set('default', 'origin-ca', { 'ca.crt': readFileSync(join(dir, 'ca.crt'), 'utf8') });
await startBenchProxy({
  port: Number(values.port), origin: Number(values.origin), policy, remote: { identity: 2, labels: ['reserved:world'] },
  configure(chain, emit) {
    // handshakes of the client side, full and resumed: written to D/handshakes-PORT.json on SIGUSR2 (bench/tls/ab.ts)
    const hs = { full: 0, resumed: 0 };
    process.on('SIGUSR2', () => writeFileSync(join(dir, `handshakes-${values.port}.json`), JSON.stringify(hs)));
    const onRecord = (r: TlsAccessRecord) => {
      if (r.verdict === 'forwarded') { if (r.resumed) hs.resumed++; else hs.full++; }
      // a flow per handshake, made where the harness makes the HTTP ones (MEMBRANE_BENCH_FLOWS=0: none)
      emit(r);
    };
    chain.addNetwork(values.mode === 'sni' ? createSniFilter({ onRecord }) : createInterceptFilter({ secrets, onRecord }));
  },
});
