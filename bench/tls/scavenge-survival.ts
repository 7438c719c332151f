/**
 * What a scavenge keeps of objects nobody points to any more (issue 18: the intercepting proxy's
 * scavenges keep ~a fifth of what was allocated, and promote it). Each case makes 300 objects, hangs
 * a ~40 KB payload on each, drops them all, then runs two minor GCs in a child process
 * (`--expose-gc --trace-gc-nvp --no-allocation-site-pretenuring`) and prints the bytes the first
 * one kept. ~0.1 MB: collected; ~12 MB: every payload was kept (and the second GC promotes it).
 *
 *   bin/node bench/tls/scavenge-survival.ts [--node PATH]   (PATH: another Node to compare, e.g. a Node 20)
 *
 * Cases: `fn-arrow`: a constructor function that stores an arrow capturing its argument
 * (`function S(o) { this.cb = (e) => g(o, e) }`, Node 24's WritableState: `this.onwrite = (er) =>
 * onwrite(stream, er)`); `fn-bind`: the same with bind (Node 20's WritableState); `class-arrow`: a
 * class field arrow capturing `this`; `writable`: a stream.Writable; `readable`: a stream.Readable;
 * `socket`: a net.Socket, destroyed.
 */
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';

const CASES = ['fn-arrow', 'fn-bind', 'class-arrow', 'writable', 'readable', 'socket'] as const;

const child = `
const net = require('node:net');
const { Writable, Readable } = require('node:stream');
const mode = process.argv[1];
const payload = () => Array.from({ length: 1000 }, (_, i) => ({ i }));
function g(o, e) { return o === e; }
function SArrow(o) { this.cb = (e) => g(o, e); }
function SBind(o) { this.cb = g.bind(undefined, o); }
class CArrow { constructor(o) { this.o = o; } f = () => this.o; }
async function make() {
  let s = {};
  if (mode === 'fn-arrow') s.state = new SArrow(s);
  else if (mode === 'fn-bind') s.state = new SBind(s);
  else if (mode === 'class-arrow') s.state = new CArrow(s);
  else if (mode === 'writable') s = new Writable({ write(c, e, cb) { cb(); } });
  else if (mode === 'readable') s = new Readable({ read() {} });
  else if (mode === 'socket') { s = new net.Socket(); await new Promise((r) => { s.on('close', r); s.destroy(); }); }
  s.x = payload();
  await new Promise((r) => setImmediate(r));
}
(async () => {
  for (let i = 0; i < 20; i++) await make();
  gc({ type: 'minor', execution: 'sync' }); gc({ type: 'minor', execution: 'sync' });
  console.log('--- measured');
  for (let i = 0; i < 300; i++) await make();
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  gc({ type: 'minor', execution: 'sync' });
})();
`;

const { values } = parseArgs({ options: { node: { type: 'string', default: process.execPath } } });
const version = execFileSync(values.node!, ['--version']).toString().trim();
console.log(`${values.node} ${version}: bytes kept by the first scavenge after 300 dropped objects (~40 KB payload each)`);
for (const c of CASES) {
  const out = execFileSync(values.node!, ['--expose-gc', '--trace-gc-nvp', '--no-allocation-site-pretenuring', '--min-semi-space-size=16', '--max-semi-space-size=16', '-e', child, c]).toString();
  const kept = /new_space_survived=(\d+)/.exec(out.slice(out.indexOf('--- measured')))?.[1];
  console.log(`${c.padEnd(12)} ${kept === undefined ? '?' : (Number(kept) / 1e6).toFixed(2).padStart(6)} MB`);
}
