/**
 * What one koffi call costs, the spike's unit of overhead: ns per call of OpenSSL functions that do
 * almost nothing (OpenSSL_version_num: no argument; SSL_has_pending and SSL_get_error on a fresh
 * SSL*: a pointer argument), of SSL_read on a socket with nothing to read (a read(2) that fails with
 * EAGAIN under it: the call with its syscall), against a JS function call; and of one C -> JS
 * callback (koffi.register'd comparator called by libc's qsort, as libuv calls the poll callback).
 *
 *   bin/node bench/tls/native-spike/koffi-cost.ts [--n 2000000] [--rounds 5]
 */
import koffi from 'koffi';
import { parseArgs } from 'node:util';
import { openssl, libc } from './ffi.ts';

const { values } = parseArgs({ options: { n: { type: 'string', default: '2000000' }, rounds: { type: 'string', default: '5' } } });
const N = Number(values.n), ROUNDS = Number(values.rounds);
const ctx = openssl.CTX_new(openssl.TLS_client_method());
const ssl = openssl.new(ctx);
const sslSock = openssl.new(ctx);
// a connected socket with nothing to read: a listener of ours and a connection to it (never accepted: the handshake completes in the kernel)
const lfd = libc.tcpListen(19999);
const cfd = libc.tcpConnect(19999);
openssl.set_fd(sslSock, cfd);
const BUF = Buffer.allocUnsafeSlow(16384);

let sink = 0;
function jsNoop(x: number): number { return x + 1; }
const cases: Record<string, (n: number) => void> = {
  'JS call': (n) => { for (let i = 0; i < n; i++) sink = jsNoop(sink); },
  'OpenSSL_version_num()': (n) => { for (let i = 0; i < n; i++) sink += openssl.version_num() & 1; },
  'SSL_has_pending(ssl)': (n) => { for (let i = 0; i < n; i++) sink += openssl.has_pending(ssl); },
  'SSL_get_error(ssl, 1)': (n) => { for (let i = 0; i < n; i++) sink += openssl.get_error(ssl, 1); },
  'SSL_read(ssl, buf) -> EAGAIN': (n) => { for (let i = 0; i < n; i++) sink += openssl.read(sslSock, BUF, BUF.length); },
};
const libcQ = koffi.load('libc.so.6');
const cmpProto = koffi.proto('int mb_spike_cmp(const void *a, const void *b)');
const qsort = libcQ.func('void qsort(void *base, size_t n, size_t size, mb_spike_cmp *cmp)');
let calls = 0;
const cmp = koffi.register(() => { calls++; return 0; }, koffi.pointer(cmpProto));
const arr = Buffer.alloc(4 * 64);
const callback = (n: number): number => { calls = 0; const t = process.hrtime.bigint(); while (calls < n) qsort(arr, 64, 4, cmp); return Number(process.hrtime.bigint() - t) / calls; };

const res: Record<string, number[]> = {};
for (let r = 0; r < ROUNDS; r++) {
  for (const [k, f] of Object.entries(cases)) {
    const n = k.startsWith('SSL_read') ? N / 10 : N;
    const t = process.hrtime.bigint();
    f(n);
    (res[k] ??= []).push(Number(process.hrtime.bigint() - t) / n);
  }
  (res['C -> JS callback (qsort cmp)'] ??= []).push(callback(N / 4));
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [k, v] of Object.entries(res)) console.log(`${k.padEnd(32)} ${med(v).toFixed(1)} ns per call (rounds ${v.map((x) => x.toFixed(1)).join(' ')})`);
libc.close(cfd); libc.close(lfd);
if (sink === 0.5) console.log(sink);
