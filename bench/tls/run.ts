/**
 * TLS proxy benchmark: wrk over HTTPS through the membrane TLS proxies against HAProxy doing the
 * same work, in the same run. The proxy under test (membrane or HAProxy, one thread) is pinned to
 * CPU 1; the origin (HAProxy terminating TLS and answering 200 itself) and wrk share CPU 0.
 *
 *   SNI-only connections/s   a new TLS connection per request (wrk -c50, Connection: close), the
 *                            proxy reads the ClientHello, decides by SNI (serverNames) and passes
 *                            the bytes through; HAProxy: mode tcp, req_ssl_sni (TLS passthrough)
 *   intercepted req/s        the proxy terminates TLS (leaf for the SNI from the interception CA),
 *                            applies HTTP rules, originates TLS to the origin verified against its
 *                            CA; HAProxy: ssl crt + server ssl verify required (TLS termination and
 *                            re-encryption); keep-alive (wrk -c50) and a new connection per request
 *
 *   [MEMBRANE_BENCH_FEED=0] bin/node bench/tls/run.ts [--secs 6] [--rounds 2] [--append]
 * By default the membrane proxies run as the lab runs them, in their own process, the flows made
 * by an agent stand-in (bench/feed-agent.ts, their child on the same CPU) from the access records
 * sent over the feed socket; MEMBRANE_BENCH_FEED=0 runs them inside the agent (bench/proxy-harness.ts).
 * Each ratio is printed as the median of the rounds' ratios with their min–max; the interception
 * rows are checked against issue 18's goal (≥ 0.70 of HAProxy) in every round.
 * With --append the result table and the command go to bench/RESULTS.md under
 * `## tls, the proxy in its own process (the lab default)` (MEMBRANE_BENCH_FEED=0:
 * `## tls, the proxy inside the agent (MEMBRANE_BENCH_FEED=0)`). The CPU per request counts the
 * agent stand-in's with the proxy's.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { INTERCEPT_CIPHERS } from '../../src/proxy/tls/issuer.ts';
import { negotiatedCipher, tls13Suites } from './cipher.ts';
import { benchCa, benchOwnProcess, benchProxyNodeFlags, childrenCpuUs, cpuUs, haproxyCfg as writeHaproxyCfg, median, parseWrk, reportResults, startPinned, type WrkResult } from '../support.ts';

const { values } = parseArgs({ options: { secs: { type: 'string', default: '6' }, rounds: { type: 'string', default: '2' }, append: { type: 'boolean', default: false } } });
const SECS = Number(values.secs);
const ROUNDS = Number(values.rounds);
const REPO = resolve(import.meta.dirname, '../..');
const NAME = 'api.bench.test';
const ORIGIN = 18443, H_SNI = 18444, M_SNI = 18445, H_TERM = 18446, M_TERM = 18447;
const dir = mkdtempSync(join(tmpdir(), 'bench-tls-'));
const startLoad = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const children: ChildProcess[] = [];

const ca = (name: string): void => benchCa(dir, name, NAME);

const haproxyCfg = (name: string, body: string) => writeHaproxyCfg(dir, name, body, { tcp: true, global: '  tune.ssl.default-dh-param 2048\n' });
// the proxies start slowly on a loaded machine (in their own process, the default, they start the agent stand-in first)
const start = (cpu: number, cmd: string, args: string[], readyText?: string) => startPinned(children, cpu, cmd, args, readyText, 120_000);

interface Wrk extends WrkResult { cpuUs: number }
// wrk sends the URL's host as SNI; this resolves it to loopback (no /etc/hosts change)
const LUA = join(dir, 'resolve.lua');
writeFileSync(LUA, 'wrk.resolve = function(host, service) wrk.addrs = wrk.lookup("127.0.0.1", service) end\n');
function wrk(port: number, conns: number, close: boolean, secs = SECS, pid?: number): Wrk {
  const cpu0 = cpuUs(pid) + childrenCpuUs(pid);
  const out = execFileSync('taskset', ['-c', '0', 'wrk', '-t1', `-c${conns}`, `-d${secs}s`, '--latency', '-s', LUA, ...(close ? ['-H', 'Connection: close'] : []), `https://${NAME}:${port}/v1/models`]).toString();
  return { ...parseWrk(out), cpuUs: cpuUs(pid) + childrenCpuUs(pid) - cpu0 };
}

try {
  ca('ca'); // the origin's CA
  ca('ica'); // the interception CA (HAProxy gets a static leaf from it; membrane issues one on the fly)
  await start(0, 'haproxy', ['-db', '-f', haproxyCfg('origin', `frontend origin\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:${ORIGIN} ssl crt ${join(dir, 'leaf-ca.pem')}\n  http-request return status 200 content-type application/json string "{\\"ok\\":true}"\n`)]);
  const hSni = await start(1, 'haproxy', ['-db', '-f', haproxyCfg('sni', `frontend fe\n  mode tcp\n  bind 127.0.0.1:${H_SNI}\n  tcp-request inspect-delay 5s\n  tcp-request content accept if { req_ssl_hello_type 1 }\n  use_backend be if { req_ssl_sni -i ${NAME} }\nbackend be\n  mode tcp\n  server origin 127.0.0.1:${ORIGIN}\n`)]);
  const hTerm = await start(1, 'haproxy', ['-db', '-f', haproxyCfg('term', `frontend fe\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:${H_TERM} ssl crt ${join(dir, 'leaf-ica.pem')} ciphersuites ${tls13Suites(INTERCEPT_CIPHERS)}\n  http-request deny deny_status 403 unless { method POST } { path /v1/chat/completions } or { method GET } { path /v1/models }\n  default_backend be\nbackend be\n  mode http\n  http-reuse always\n  server origin 127.0.0.1:${ORIGIN} ssl verify required ca-file ${join(dir, 'ca.crt')} sni str(${NAME}) verifyhost ${NAME}\n`)]);
  const mSni = await start(1, join(REPO, 'bin/node'), [...benchProxyNodeFlags(), join(REPO, 'bench/tls/proxy-server.ts'), '--mode', 'sni', '--port', String(M_SNI), '--origin', String(ORIGIN), '--dir', dir, '--name', NAME], 'ready');
  const mTerm = await start(1, join(REPO, 'bin/node'), [...benchProxyNodeFlags(), join(REPO, 'bench/tls/proxy-server.ts'), '--mode', 'intercept', '--port', String(M_TERM), '--origin', String(ORIGIN), '--dir', dir, '--name', NAME], 'ready');
  // warm up (JIT, leaf issuance, upstream pools)
  for (const p of [ORIGIN, H_SNI, M_SNI, H_TERM, M_TERM]) wrk(p, 10, p === H_SNI || p === M_SNI, 2);
  // the suite each terminating side picks for wrk's offer (OpenSSL's default order, AES-256 first)
  const ciphers = { origin: negotiatedCipher(ORIGIN, NAME), haproxy: negotiatedCipher(H_TERM, NAME), membrane: negotiatedCipher(M_TERM, NAME) };

  type K = 'origin' | 'hSni' | 'mSni' | 'hKa' | 'mKa' | 'hNew' | 'mNew';
  const res: Record<K, Wrk[]> = { origin: [], hSni: [], mSni: [], hKa: [], mKa: [], hNew: [], mNew: [] };
  for (let r = 0; r < ROUNDS; r++) {
    res.origin.push(wrk(ORIGIN, 50, true));
    res.hSni.push(wrk(H_SNI, 50, true, SECS, hSni.pid));
    res.mSni.push(wrk(M_SNI, 50, true, SECS, mSni.pid));
    res.hKa.push(wrk(H_TERM, 50, false, SECS, hTerm.pid));
    res.mKa.push(wrk(M_TERM, 50, false, SECS, mTerm.pid));
    res.hNew.push(wrk(H_TERM, 50, true, SECS, hTerm.pid));
    res.mNew.push(wrk(M_TERM, 50, true, SECS, mTerm.pid));
  }
  const m = (k: K, f: keyof Wrk) => median(res[k].map((x) => x[f]));
  const errs = (ks: K[]) => ks.reduce((s, k) => s + res[k].reduce((a, x) => a + x.errors, 0), 0);
  const perReqOf = (x: Wrk) => (x.requests ? x.cpuUs / x.requests : NaN);
  const perReq = (k: K) => median(res[k].map(perReqOf));
  /** median over the rounds of a per-round value, with its min–max (rounds are interleaved: each round's ratio compares neighbours in time) */
  const spread = (xs: number[], digits: number, unit = '') => `${median(xs).toFixed(digits)}${unit} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;
  const rateRatios = (hk: K, mk: K) => res[mk].map((x, i) => x.rps / res[hk][i]!.rps);
  const cpuRatios = (hk: K, mk: K) => res[mk].map((x, i) => perReqOf(x) / perReqOf(res[hk][i]!));
  /** goal of issue 18 for interception: ≥ 0.70 of HAProxy's rate in every round */
  const GOAL = 0.7;
  const row = (label: string, hk: K, mk: K, goal?: number) => {
    const rr = rateRatios(hk, mk);
    const mark = goal === undefined ? '' : rr.every((r) => r >= goal) ? 'ok' : `below in ${rr.filter((r) => r < goal).length} of ${rr.length}`;
    return `| ${label} | ${m(hk, 'rps').toFixed(0)} | ${m(mk, 'rps').toFixed(0)} | ${spread(rr, 2)} | ${goal === undefined ? '' : `≥ ${goal.toFixed(2)}`} | ${mark} | ${perReq(hk).toFixed(0)} µs | ${perReq(mk).toFixed(0)} µs | ${spread(cpuRatios(hk, mk), 1, '×')} |`;
  };
  const own = benchOwnProcess();
  const cmd = `${own ? '' : 'MEMBRANE_BENCH_FEED=0 '}bin/node bench/tls/run.ts --secs ${SECS} --rounds ${ROUNDS}${values.append ? ' --append' : ''}`;
  const lines = [
    own ? '## tls, the proxy in its own process (the lab default)' : '## tls, the proxy inside the agent (MEMBRANE_BENCH_FEED=0)', '',
    `Command: \`${cmd}\``, '',
    `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, ${cpus().length} vCPU (${cpus()[0]?.model.trim()}), shared with other work. ` +
    `Loopback, HTTPS (TLS 1.3, ECDSA P-256). Origin = HAProxy terminating TLS and answering 200 itself (CPU 0, with wrk -t1 -c50); proxy under test pinned to CPU 1 ` +
    `(HAProxy nbthread 1 / one Node process). SNI-only: a new TLS connection per request (\`Connection: close\`), the handshake end to end with the origin; ` +
    `membrane reads and decides the ClientHello (3 serverNames) and passes the bytes through, HAProxy \`mode tcp\` + \`req_ssl_sni\`. Intercepted: membrane issues the leaf for the SNI from the ` +
    `interception CA (cached), applies 2 HTTP rules and originates TLS verified against the origin's CA (pooled); HAProxy \`ssl crt\` (a static leaf) + ` +
    `\`http-request deny\` + \`server ... ssl verify required\` with \`http-reuse always\`. Flows and metrics on for membrane (a TLS flow per handshake, two HTTP flows per request${own ? ', made by an agent stand-in in its own process on the same CPU, bench/feed-agent.ts, from the access records the proxy sends over the feed socket; its CPU counted with the proxy\'s' : ', in the proxy\'s process as the in-agent proxy'}). ` +
    `${ROUNDS} interleaved rounds, ${SECS} s each: rates and CPU per request are medians of the rounds; each ratio is the median of the rounds' membrane / HAProxy with their min–max in parentheses, a goal met when every round meets it. ` +
    `Load average ${startLoad} at the start, ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')} at the end. wrk resumes TLS sessions (tickets) on its new connections, with both proxies. ` +
    `The SNI-only rate is bounded by wrk and the origin sharing CPU 0 (origin alone below): the proxy's CPU time per connection (from /proc, 10 ms ticks) is the comparison there.`, '',
    '| measure | HAProxy | membrane | membrane / HAProxy | goal | | proxy CPU per request: HAProxy | membrane | membrane / HAProxy |',
    '|---|---|---|---|---|---|---|---|---|',
    row('SNI-only connections/s (TLS passthrough, new connection per request)', 'hSni', 'mSni'),
    row('intercepted HTTPS req/s, keep-alive (50 conns)', 'hKa', 'mKa', GOAL),
    row('intercepted HTTPS req/s, new TLS connection per request', 'hNew', 'mNew', GOAL),
    '',
    `Origin alone (new TLS connection per request): ${m('origin', 'rps').toFixed(0)} req/s. p50 at 50 connections: SNI HAProxy ${m('hSni', 'p50').toFixed(2)} ms / membrane ${m('mSni', 'p50').toFixed(2)} ms; ` +
    `intercepted keep-alive HAProxy ${m('hKa', 'p50').toFixed(2)} ms / membrane ${m('mKa', 'p50').toFixed(2)} ms. ` +
    `Errors (non-2xx, socket): HAProxy ${errs(['hSni', 'hKa', 'hNew'])}, membrane ${errs(['mSni', 'mKa', 'mNew'])}. ` +
    `Negotiated with wrk's offer (OpenSSL's default order, \`openssl s_client\`): intercepting HAProxy ${ciphers.haproxy} (its bind prefers membrane's order, server preference), membrane ${ciphers.membrane}; the origin (both proxies' upstream leg) ${ciphers.origin}.`, '',
  ];
  reportResults(lines, values.append);
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
