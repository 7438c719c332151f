/**
 * AI policy benchmark: a 4 KiB chat completion request (POST /v1/chat/completions, JSON) through
 * the membrane HTTP proxy with the AI filter on (body held and read, model / max tokens / budget /
 * rate judged, the response's usage read and charged, flows with the AI extension, metrics)
 * against the same proxy with the plain HTTP rule only, in the same run. Both proxies are pinned
 * to CPU 1 (measured one at a time); the origin (HAProxy answering a chat completion JSON with
 * usage itself) and wrk share CPU 0. Measures:
 *   keep-alive req/s      wrk -t1 -c50
 *   added p50 / p99       wrk -t1 -c1 (one request at a time): AI minus plain, and each minus the origin
 *   CPU per request       the proxy's user+system time (/proc, 10 ms ticks) over the keep-alive run
 *                         divided by its requests: what the AI filter adds, whatever else runs
 *
 *   bin/node bench/ai/run.ts [--secs 8] [--rounds 3] [--append]
 * With --append the result table and the command go to bench/RESULTS.md under `## ai`.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { cpuUs, haproxyCfg as writeHaproxyCfg, median, parseWrk, reportResults, startPinned, type WrkResult } from '../support.ts';

const { values } = parseArgs({ options: { secs: { type: 'string', default: '8' }, rounds: { type: 'string', default: '3' }, append: { type: 'boolean', default: false } } });
const SECS = Number(values.secs);
const ROUNDS = Number(values.rounds);
const REPO = resolve(import.meta.dirname, '../..');
const ORIGIN = 18280, PLAIN = 18281, AI = 18282;
const dir = mkdtempSync(join(tmpdir(), 'bench-ai-'));
const children: ChildProcess[] = [];
const loadAtStart = loadavg().map((x) => x.toFixed(1)).join(', ');
const haproxyCfg = (name: string, body: string) => writeHaproxyCfg(dir, name, body);
const start = (cpu: number, cmd: string, args: string[], readyText?: string) => startPinned(children, cpu, cmd, args, readyText);

// a 4 KiB chat request: a system prompt and a user message padded to 4096 bytes in all
const base = { model: 'gpt-4o-mini', max_tokens: 256, temperature: 0.2, messages: [{ role: 'system', content: 'You are a helpful assistant for the membrane benchmark.' }, { role: 'user', content: '' }] };
const pad = 4096 - JSON.stringify(base).length;
base.messages[1]!.content = 'Summarise the following text. '.repeat(Math.ceil(pad / 30)).slice(0, pad);
const BODY = JSON.stringify(base);
if (Buffer.byteLength(BODY) !== 4096) throw new Error(`body is ${Buffer.byteLength(BODY)} bytes`);
const ANSWER = JSON.stringify({
  id: 'chatcmpl-bench', object: 'chat.completion', created: 1700000000, model: 'gpt-4o-mini', system_fingerprint: 'fp_bench',
  choices: [{ index: 0, message: { role: 'assistant', content: 'A short summary of the text.', refusal: null }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 1024, completion_tokens: 7, total_tokens: 1031 },
});
const lua = join(dir, 'chat.lua');
writeFileSync(lua, `wrk.method = "POST"\nwrk.headers["Host"] = "api.openai.com"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[${BODY}]]\n`);

interface Wrk extends WrkResult { cpuUs: number }
function wrk(port: number, conns: number, pid?: number): Wrk {
  const cpu0 = cpuUs(pid);
  const out = execFileSync('taskset', ['-c', '0', 'wrk', '-t1', `-c${conns}`, `-d${SECS}s`, '--latency', '-s', lua, `http://127.0.0.1:${port}/v1/chat/completions`]).toString();
  return { ...parseWrk(out), cpuUs: cpuUs(pid) - cpu0 };
}

try {
  await start(0, 'haproxy', ['-db', '-f', haproxyCfg('origin', `frontend origin\n  bind 127.0.0.1:${ORIGIN}\n  http-request return status 200 content-type application/json string '${ANSWER}'\n`)]);
  const plainProc = await start(1, join(REPO, 'bin/node'), [join(REPO, 'bench/ai/proxy-server.ts'), '--port', String(PLAIN), '--origin', String(ORIGIN)], 'ready');
  const aiProc = await start(1, join(REPO, 'bin/node'), [join(REPO, 'bench/ai/proxy-server.ts'), '--port', String(AI), '--origin', String(ORIGIN), '--ai', '--state', join(dir, 'ai-budgets.json')], 'ready');
  // the AI proxy must answer 200 and charge the usage (a refused request would make it look fast)
  const check = execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: api.openai.com', '-H', 'Content-Type: application/json', '--data-binary', BODY, `http://127.0.0.1:${AI}/v1/chat/completions`]).toString();
  if (check !== '200') throw new Error(`the AI proxy answered ${check}`);
  for (const p of [ORIGIN, PLAIN, AI]) execFileSync('wrk', ['-t1', '-c10', '-d2s', '-s', lua, `http://127.0.0.1:${p}/v1/chat/completions`]);

  const keys = ['origin', 'plain', 'ai'] as const;
  const ports = { origin: ORIGIN, plain: PLAIN, ai: AI };
  const pids = { origin: undefined, plain: plainProc.pid, ai: aiProc.pid };
  const res = Object.fromEntries(keys.map((k) => [k, { ka: [] as Wrk[], lat: [] as Wrk[] }])) as Record<(typeof keys)[number], { ka: Wrk[]; lat: Wrk[] }>;
  for (let r = 0; r < ROUNDS; r++) {
    for (const k of keys) {
      res[k].ka.push(wrk(ports[k], 50, pids[k]));
      res[k].lat.push(wrk(ports[k], 1));
    }
  }
  const state = JSON.parse(readFileSync(join(dir, 'ai-budgets.json'), 'utf8')) as { entries: Record<string, { n: number }> };
  const charged = Math.max(...Object.values(state.entries).map((e) => e.n));
  const m = (k: (typeof keys)[number], w: 'ka' | 'lat', f: keyof Wrk) => median(res[k][w].map((x) => x[f]));
  const errs = (k: (typeof keys)[number]) => [...res[k].ka, ...res[k].lat].reduce((a, x) => a + x.errors, 0);
  const kaP = m('plain', 'ka', 'rps'), kaA = m('ai', 'ka', 'rps');
  const p50P = m('plain', 'lat', 'p50'), p50A = m('ai', 'lat', 'p50');
  const p99P = m('plain', 'lat', 'p99'), p99A = m('ai', 'lat', 'p99');
  const o50 = m('origin', 'lat', 'p50');
  const perReq = (k: 'plain' | 'ai') => median(res[k].ka.map((x) => (x.requests ? x.cpuUs / x.requests : NaN)));
  const cpuP = perReq('plain'), cpuA = perReq('ai');
  const cmd = `bin/node bench/ai/run.ts --secs ${SECS} --rounds ${ROUNDS}${values.append ? ' --append' : ''}`;
  const ok = (b: boolean) => (b ? 'ok' : 'MISSED');
  const lines = [
    '## ai', '',
    `Command: \`${cmd}\``, '',
    `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, ${cpus().length} vCPU (${cpus()[0]?.model.trim()}), shared with other work (load average ${loadAtStart} at the start, ${loadavg().map((x) => x.toFixed(1)).join(', ')} at the end). ` +
    `Loopback; a 4 KiB chat completion request (\`POST /v1/chat/completions\`, ${Buffer.byteLength(BODY)} bytes of JSON, Host api.openai.com); origin = HAProxy answering a chat completion with usage itself (CPU 0, with wrk -t1); ` +
    `the proxy under test pinned to CPU 1, one Node process each, measured one at a time. Plain: the HTTP proxy with one HTTP rule, an L7 flow and http/flow metrics per request and response. ` +
    `AI: the same plus the AI filter (body held and read strictly, model / max tokens / token budgets / request rate judged, the response's usage read and charged to a ledger persisted to a state file, flows with the AI extension, membrane_ai_* metrics). ` +
    `Median of ${ROUNDS} interleaved rounds, ${SECS} s each.`, '',
    '| measure | plain HTTP rules | AI policy | AI / plain | goal | |',
    '|---|---|---|---|---|---|',
    `| keep-alive req/s (50 conns) | ${kaP.toFixed(0)} | ${kaA.toFixed(0)} | ${(kaA / kaP).toFixed(2)} | ≥ 0.90 | ${ok(kaA / kaP >= 0.9)} |`,
    `| p50 (1 conn) | ${p50P.toFixed(3)} ms | ${p50A.toFixed(3)} ms | +${((p50A - p50P) * 1000).toFixed(0)} µs | ≤ +100 µs | ${ok((p50A - p50P) * 1000 <= 100)} |`,
    `| p99 (1 conn) | ${p99P.toFixed(3)} ms | ${p99A.toFixed(3)} ms | +${((p99A - p99P) * 1000).toFixed(0)} µs | | |`,
    `| proxy CPU per request (keep-alive run) | ${cpuP.toFixed(0)} µs | ${cpuA.toFixed(0)} µs | +${(cpuA - cpuP).toFixed(0)} µs (${(cpuP / cpuA).toFixed(2)} of plain's rate at equal CPU) | | |`,
    '',
    `Origin alone: ${m('origin', 'ka', 'rps').toFixed(0)} req/s keep-alive, p50 ${o50.toFixed(3)} ms at one connection (added p50 over the origin: plain ${(p50P - o50).toFixed(3)} ms, AI ${(p50A - o50).toFixed(3)} ms). ` +
    `Errors (non-2xx, socket): plain ${errs('plain')}, AI ${errs('ai')}. Tokens charged by the AI proxy in the run: ${charged} (1031 per request).`, '',
  ];
  reportResults(lines, values.append);
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
