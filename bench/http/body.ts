/**
 * HTTP proxy benchmark, large bodies: membrane's HTTP proxy against HAProxy (nbthread 1) moving
 * bodies of 64 KiB, 1 MiB and 16 MiB over keep-alive connections, both ways:
 *   download            GET, a response body with Content-Length
 *   download, chunked   GET, a chunked response body (64 KiB chunks: a streamed answer)
 *   upload              POST, a request body with Content-Length
 *   upload, chunked     POST, a chunked request body (64 KiB chunks)
 * The origin and the load generator are bench/http/body-load.c (one thread per connection,
 * blocking sockets, a static buffer out and a discard buffer in; the origin checks an upload's
 * size, the client a download's), both on CPU 0; the proxy under test on CPU 1 with all its
 * threads (membrane's agent stand-in too). membrane's policy: 100 HTTP rules as bench/http/run.ts
 * and, after them, `GET /body/(download|chunked)/[0-9]+` and `POST /body/upload/[0-9]+` (method
 * and path: the body is not inspected, as users' rules are). HAProxy and membrane run in
 * alternating 1 s turns (SECS each per cell and round; a turn during which other processes took
 * over OTHERS_MAX ms/s of CPU is run again, as run.ts); the origin alone is measured in each
 * round (whether the generator is the limit). MiB/s counts body bytes; CPU per MiB is the proxy's
 * (membrane: its process and the agent stand-in) over the turns. Each ratio is the median over
 * the rounds of membrane / HAProxy in that round, min–max in parentheses.
 *
 *   bin/node bench/http/body.ts [--secs 2] [--rounds 3] [--conns 4] [--sizes 65536,1048576,16777216] [--kinds get,getchunked,post,postchunked] [--append] [--tree /other/checkout]
 * --tree measures another checkout's proxy (its bench/http/proxy-server.ts, which must take --body).
 * With --append the table goes to bench/RESULTS.md under `## http, large bodies (bench/http/body.ts)`.
 * Needs haproxy and cc.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { benchOwnProcess, childrenCpuUs, cpuUs, haproxyCfg, median, reportResults, startPinned, treeProxyNodeFlags } from '../support.ts';
import { runLine } from '../tcp-suite.ts';
import { QuietTurns } from '../placement.ts';

const { values } = parseArgs({ options: {
  secs: { type: 'string', default: '2' }, rounds: { type: 'string', default: '3' }, conns: { type: 'string', default: '4' },
  sizes: { type: 'string', default: '65536,1048576,16777216' }, kinds: { type: 'string', default: 'get,getchunked,post,postchunked' },
  append: { type: 'boolean', default: false }, tree: { type: 'string' },
} });
const SECS = Number(values.secs), ROUNDS = Number(values.rounds), CONNS = Number(values.conns);
const SIZES = values.sizes.split(',').map(Number);
const KINDS = values.kinds.split(',') as Kind[];
const REPO = resolve(values.tree ?? resolve(import.meta.dirname, '../..'));
const ORIGIN = 18280, HAPROXY = 18281, MEMBRANE = 18282;
const OTHERS_MAX = 150, REDO_MAX = 3;
const MiB = 1024 * 1024;
type Kind = 'get' | 'getchunked' | 'post' | 'postchunked';
const KIND_NAME: Record<Kind, string> = { get: 'download', getchunked: 'download, chunked', post: 'upload', postchunked: 'upload, chunked' };
for (const k of KINDS) if (!(k in KIND_NAME)) throw new Error(`E_BENCH_KIND: --kinds ${k}: want get, getchunked, post or postchunked`);

const dir = mkdtempSync(join(tmpdir(), 'bench-body-'));
const children: ChildProcess[] = [];
const startLoad = loadavg()[0]!;
const bin = join(dir, 'body-load');

interface Load { requests: number; bytes: number; secs: number; errors: number }
/** the load generator on CPU 0 against `port` for `secs` */
function load(port: number, kind: Kind, size: number, secs: number): Load {
  const out = execFileSync('taskset', ['-c', '0', bin, 'client', String(port), String(secs), String(CONNS), kind, String(size)]).toString();
  const m = /^requests (\d+) bytes (\d+) secs ([\d.]+) errors (\d+)/m.exec(out);
  if (!m) throw new Error(`body-load printed: ${out}`);
  return { requests: Number(m[1]), bytes: Number(m[2]), secs: Number(m[3]), errors: Number(m[4]) };
}
const sizeName = (n: number) => n >= MiB ? `${n / MiB} MiB` : `${n / 1024} KiB`;
/** peak resident memory of a process (VmHWM, MiB) */
const peakRss = (pid: number | undefined) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

/** one cell of one round: MiB/s and CPU (ms) per MiB of each proxy; the origin's MiB/s */
interface Cell { mibs: { origin: number; haproxy: number; membrane: number }; cpu: { haproxy: number; membrane: number }; errors: { origin: number; haproxy: number; membrane: number } }

try {
  execFileSync('cc', ['-O2', '-pthread', '-o', bin, join(import.meta.dirname, 'body-load.c')]);
  const origin = await startPinned(children, 0, bin, ['server', String(ORIGIN)], 'ready');
  const hap = await startPinned(children, 1, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'proxy', `frontend fe\n  bind 127.0.0.1:${HAPROXY}\n  default_backend be\nbackend be\n  http-reuse always\n  server origin 127.0.0.1:${ORIGIN}\n`)]);
  const mb = await startPinned(children, 1, join(REPO, 'bin/node'), [...await treeProxyNodeFlags(REPO), join(REPO, 'bench/http/proxy-server.ts'), '--port', String(MEMBRANE), '--origin', String(ORIGIN), '--rules', '100', '--body'], 'ready');
  const kids = (pid: number | undefined) => { try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; } };
  const pids = { haproxy: hap.pid!, membrane: mb.pid! };
  const quiet = new QuietTurns([origin.pid!, hap.pid!, mb.pid!, ...kids(mb.pid)], { maxMsPerS: OTHERS_MAX, redoMax: REDO_MAX });
  // warm up (JIT, upstream pools): each kind and size once through each
  for (const p of [HAPROXY, MEMBRANE]) for (const k of KINDS) for (const s of SIZES) load(p, k, s, 0.3);

  const cells = new Map<string, Cell[]>();
  const proxyCpu = (k: 'haproxy' | 'membrane') => cpuUs(pids[k]) + childrenCpuUs(pids[k]);
  for (let r = 0; r < ROUNDS; r++) {
    for (const kind of KINDS) for (const size of SIZES) {
      const o = load(ORIGIN, kind, size, 1);
      const acc = { haproxy: { bytes: 0, secs: 0, cpu: 0, errors: 0 }, membrane: { bytes: 0, secs: 0, cpu: 0, errors: 0 } };
      for (let t = 0; t < SECS; t++) {
        for (const k of t % 2 ? ['membrane', 'haproxy'] as const : ['haproxy', 'membrane'] as const) {
          const v = quiet.run(() => {
            const c0 = proxyCpu(k);
            const l = load(k === 'haproxy' ? HAPROXY : MEMBRANE, kind, size, 1);
            return { value: { l, cpu: proxyCpu(k) - c0 }, secs: l.secs };
          });
          const a = acc[k];
          a.bytes += v.l.bytes; a.secs += v.l.secs; a.cpu += v.cpu; a.errors += v.l.errors;
        }
      }
      const mibs = (a: { bytes: number; secs: number }) => a.bytes / MiB / a.secs;
      const cpuPerMiB = (a: { bytes: number; cpu: number }) => a.bytes > 0 ? a.cpu / 1000 / (a.bytes / MiB) : NaN;
      const cell: Cell = {
        mibs: { origin: o.bytes / MiB / o.secs, haproxy: mibs(acc.haproxy), membrane: mibs(acc.membrane) },
        cpu: { haproxy: cpuPerMiB(acc.haproxy), membrane: cpuPerMiB(acc.membrane) },
        errors: { origin: o.errors, haproxy: acc.haproxy.errors, membrane: acc.membrane.errors },
      };
      const key = `${kind} ${size}`;
      cells.set(key, [...(cells.get(key) ?? []), cell]);
      console.error(`round ${r + 1} ${KIND_NAME[kind]} ${sizeName(size)}: origin ${cell.mibs.origin.toFixed(0)} MiB/s; HAProxy ${cell.mibs.haproxy.toFixed(0)} MiB/s ${cell.cpu.haproxy.toFixed(2)} ms/MiB; ` +
        `membrane ${cell.mibs.membrane.toFixed(0)} MiB/s ${cell.cpu.membrane.toFixed(2)} ms/MiB; errors ${cell.errors.origin}/${cell.errors.haproxy}/${cell.errors.membrane}`);
    }
  }
  const endLoad = loadavg()[0]!;
  const span = (xs: number[], d = 2) => `${median(xs).toFixed(d)} (${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)})`;
  const rows: string[] = [];
  let errors = { origin: 0, haproxy: 0, membrane: 0 };
  for (const kind of KINDS) for (const size of SIZES) {
    const cs = cells.get(`${kind} ${size}`)!;
    const m = (f: (c: Cell) => number, d = 0) => median(cs.map(f)).toFixed(d);
    rows.push(`| ${KIND_NAME[kind]} | ${sizeName(size)} | ${m((c) => c.mibs.origin)} | ${m((c) => c.mibs.haproxy)} | ${m((c) => c.mibs.membrane)} | ${span(cs.map((c) => c.mibs.membrane / c.mibs.haproxy))} | ` +
      `${m((c) => c.cpu.haproxy, 2)} | ${m((c) => c.cpu.membrane, 2)} | ${span(cs.map((c) => c.cpu.membrane / c.cpu.haproxy))} |`);
    for (const c of cs) errors = { origin: errors.origin + c.errors.origin, haproxy: errors.haproxy + c.errors.haproxy, membrane: errors.membrane + c.errors.membrane };
  }
  const feed = benchOwnProcess();
  const cmd = `${feed ? '' : 'MEMBRANE_BENCH_FEED=0 '}bin/node bench/http/body.ts --secs ${SECS} --rounds ${ROUNDS} --conns ${CONNS} --sizes ${values.sizes} --kinds ${values.kinds}${values.tree ? ` --tree ${values.tree}` : ''}${values.append ? ' --append' : ''}`;
  reportResults([
    '## http, large bodies (bench/http/body.ts)', '',
    `Command: \`${cmd}\``, '',
    `${runLine(startLoad)}, ${endLoad.toFixed(2)} at the end. Loopback; origin and load generator bench/http/body-load.c on CPU 0 (${CONNS} keep-alive connections, one request at a time on each); ` +
    `the proxy under test pinned to CPU 1 with all its threads (HAProxy nbthread 1, \`http-reuse always\` / one Node process${feed ? ' and its agent stand-in' : ''}). ` +
    'membrane: 100 HTTP rules and, after them, `GET /body/(download|chunked)/[0-9]+` and `POST /body/upload/[0-9]+` (the body is not inspected). ' +
    `${ROUNDS} rounds; per cell and round HAProxy and membrane in alternating 1 s turns, ${SECS} each (a turn run again when other processes took over ${OTHERS_MAX} ms/s of CPU), the origin alone 1 s. ` +
    'MiB/s counts body bytes; CPU per MiB is the proxy\'s (membrane: proxy process + agent stand-in). Ratios: median over the rounds of membrane / HAProxy, min–max in parentheses.', '',
    '| body | size | origin alone MiB/s | HAProxy MiB/s | membrane MiB/s | membrane / HAProxy | HAProxy CPU ms/MiB | membrane CPU ms/MiB | CPU membrane / HAProxy |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows, '',
    `Errors (a request not answered 200 or a body not of its size): origin ${errors.origin}, HAProxy ${errors.haproxy}, membrane ${errors.membrane}. ` +
    `Peak resident memory: HAProxy ${peakRss(pids.haproxy).toFixed(0)} MiB, membrane proxy ${peakRss(pids.membrane).toFixed(0)} MiB. Turns: ${quiet.summary()}.`, '',
  ], values.append);
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
