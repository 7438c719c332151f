/**
 * Batched UDP I/O (src/sys/udp-batch.ts) over real loopback sockets: many datagrams per
 * sendmmsg/recvmmsg, sources and lengths per datagram, and the attacker's cases: an oversized
 * datagram (cut by the kernel, flagged) or a runt inside a batch leaves its neighbours intact,
 * and a datagram the kernel refuses inside a send batch is dropped while the others still go.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { execFileSync } from 'node:child_process';
import { RecvBatch, SendBatch, dgramFd, put64 } from '../../../../src/sys/udp-batch.ts';
import { sockAddrAt, sockAddrOf, type SockAddr } from '../../../../src/sys/sock-addr.ts';

const addr = (ip: string): SockAddr => sockAddrOf(ip)!;

function fdOf(s: Socket): number {
  const fd = dgramFd(s);
  if (fd < 0) throw new Error('no fd');
  return fd;
}

async function bound(ip = '127.0.0.1'): Promise<Socket> {
  const s = createSocket({ type: ip.includes(':') ? 'udp6' : 'udp4', ipv6Only: ip.includes(':') });
  await new Promise<void>((r) => s.bind(0, ip, r));
  return s;
}

/** Everything `rx` receives: the datagram Node read, then what one drain with `batch` took. */
function collect(rx: Socket, batch: RecvBatch, want: number): Promise<{ node: Buffer[]; drained: { bytes: Buffer; truncated: boolean; from: string; port: number }[]; calls: number[] }> {
  return new Promise((resolve, reject) => {
    const node: Buffer[] = [];
    const drained: { bytes: Buffer; truncated: boolean; from: string; port: number }[] = [];
    const calls: number[] = [];
    const t = setTimeout(() => reject(new Error(`got ${node.length + drained.length} of ${want}`)), 3000);
    rx.on('message', (m) => {
      node.push(m);
      for (;;) {
        const n = batch.recv(fdOf(rx));
        if (n <= 0) break;
        calls.push(n);
        for (let i = 0; i < n; i++) {
          const o = batch.offset(i);
          drained.push({ bytes: Buffer.from(batch.data.subarray(o, o + batch.length(i))), truncated: batch.truncated(i), from: batch.source(i)?.ip ?? '', port: batch.sourcePort(i) });
        }
      }
      if (node.length + drained.length >= want) { clearTimeout(t); resolve({ node, drained, calls }); }
    });
  });
}

test('addresses of both families: text ⇄ bytes, interned (one object per address, bytes and text agree)', () => {
  const a = addr('10.244.1.2');
  assert.deepEqual([a.family, a.bytes.toString('hex')], [4, '0af40102']);
  assert.equal(sockAddrAt(Buffer.from('0af40102', 'hex'), 0, 4), a, 'the same object from the wire');
  const b = addr('fd00:10:244:1::2');
  assert.deepEqual([b.family, b.bytes.toString('hex')], [6, 'fd000010024400010000000000000002']);
  assert.equal(sockAddrAt(Buffer.from(`00${b.bytes.toString('hex')}`, 'hex'), 1, 6), b);
  // RFC 5952 text from the wire, as Node prints it; another prefix with the same interface id is another address
  const other = sockAddrAt(Buffer.from('fd000010024400020000000000000002', 'hex'), 0, 6);
  assert.deepEqual([other.ip, other === b], ['fd00:10:244:2::2', false]);
  assert.equal(sockAddrAt(Buffer.from('00000000000000000000ffff0a000001', 'hex'), 0, 6).ip, '::ffff:10.0.0.1', 'IPv4-mapped stays IPv6 (its own address, never the IPv4 one)');
  assert.notEqual(a.key, b.key);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', 'a.b.c.d', '1.2.3.4 ', '1.2.3.0004', 'fd00::1::2', 'fd00::g']) assert.equal(sockAddrOf(bad), undefined, bad);
});

test('sendmmsg sends a batch in one call; recvmmsg drains it with each source and length', async () => {
  const rx = await bound();
  const tx = await bound();
  const send = new SendBatch(fdOf(tx), 16);
  const recv = new RecvBatch(8, 512);
  try {
    const got = collect(rx, recv, 20);
    const to = addr('127.0.0.1');
    for (let i = 0; i < 20; i++) send.pushCopy(to, rx.address().port, Buffer.from(`datagram-${i}`));
    send.flush();
    assert.equal(send.sent, 20);
    assert.equal(send.calls, 2, '20 datagrams through a 16-slot batch: two sendmmsg calls');
    const r = await got;
    const all = [...r.node.map((b) => b.toString()), ...r.drained.map((d) => d.bytes.toString())];
    assert.deepEqual(all, Array.from({ length: 20 }, (_, i) => `datagram-${i}`));
    assert.ok(r.calls.every((n) => n <= 8) && r.calls.length >= 2, `8 at most per recvmmsg: ${r.calls}`);
    for (const d of r.drained) assert.deepEqual([d.from, d.port, d.truncated], ['127.0.0.1', tx.address().port, false]);
    assert.equal(recv.recv(fdOf(rx)), 0, 'an empty queue reads as 0, never blocks');
  } finally { rx.close(); tx.close(); }
});

test('pushCopy: a slice of a larger buffer (at any offset, short and long) is sent as exactly its bytes, never its neighbours\'', async () => {
  const rx = await bound();
  const tx = await bound();
  const send = new SendBatch(fdOf(tx), 64);
  const recv = new RecvBatch(64, 1024);
  try {
    const arena = Buffer.alloc(2048);
    for (let i = 0; i < arena.length; i++) arena[i] = (i * 131 + 7) & 255;
    const cuts: [number, number][] = [];
    for (const len of [1, 2, 63, 127, 128, 129, 300, 700]) for (const at of [0, 1, 3, 1000]) cuts.push([at, len]);
    const got = collect(rx, recv, cuts.length);
    const to = addr('127.0.0.1');
    for (const [at, len] of cuts) send.pushCopy(to, rx.address().port, arena, at, at + len);
    send.flush();
    const r = await got;
    const all = [...r.node, ...r.drained.map((d) => d.bytes)];
    assert.deepEqual(all.map((b) => b.toString('hex')), cuts.map(([at, len]) => arena.subarray(at, at + len).toString('hex')));
  } finally { rx.close(); tx.close(); }
});

test('attacker: an oversized datagram and a runt inside a batch are flagged alone; neighbours intact', async () => {
  const rx = await bound();
  const tx = await bound();
  const send = new SendBatch(fdOf(tx), 16);
  const recv = new RecvBatch(16, 512);
  try {
    const got = collect(rx, recv, 6);
    const to = addr('127.0.0.1');
    const port = rx.address().port;
    const big = Buffer.alloc(3000, 0xab);
    big.write('HEAD', 0);
    send.pushCopy(to, port, Buffer.from('first'));
    send.pushCopy(to, port, Buffer.from('before'));
    send.pushCopy(to, port, big);
    send.pushCopy(to, port, Buffer.from([7]));
    send.pushCopy(to, port, Buffer.alloc(0));
    send.pushCopy(to, port, Buffer.from('after'));
    send.flush();
    const r = await got;
    assert.equal(r.node[0]!.toString(), 'first');
    const d = r.drained;
    assert.deepEqual(d.map((x) => [x.bytes.length, x.truncated]), [[6, false], [512, true], [1, false], [0, false], [5, false]]);
    assert.equal(d[0]!.bytes.toString(), 'before');
    assert.equal(d[1]!.bytes.subarray(0, 4).toString(), 'HEAD', 'the cut datagram keeps its header (for a FORMERR)');
    assert.equal(d[4]!.bytes.toString(), 'after');
  } finally { rx.close(); tx.close(); }
});

test('a datagram the kernel refuses inside a send batch is dropped; the others go', async () => {
  const rx = await bound();
  const tx = await bound();
  const send = new SendBatch(fdOf(tx), 8);
  const recv = new RecvBatch(8, 512);
  try {
    const got = collect(rx, recv, 3);
    const port = rx.address().port;
    send.pushCopy(addr('127.0.0.1'), port, Buffer.from('a'));
    // broadcast without SO_BROADCAST: EACCES for this one datagram only
    send.pushCopy(addr('255.255.255.255'), port, Buffer.from('evil'));
    send.pushCopy(addr('127.0.0.1'), port, Buffer.from('b'));
    send.pushCopy(addr('127.0.0.1'), port, Buffer.from('c'));
    assert.equal(send.flush(), 3);
    assert.equal(send.dropped, 1);
    const r = await got;
    assert.deepEqual([...r.node, ...r.drained.map((x) => x.bytes)].map(String), ['a', 'b', 'c']);
  } finally { rx.close(); tx.close(); }
});

test('a connected socket sends with no address (null); a batch that overflows its bytes flushes first', async () => {
  const rx = await bound();
  const tx = createSocket('udp4');
  await new Promise<void>((r) => tx.connect(rx.address().port, '127.0.0.1', () => r()));
  const send = new SendBatch(fdOf(tx), 64, 65536);
  const recv = new RecvBatch(64, 65536);
  try {
    const got = collect(rx, recv, 5);
    for (let i = 0; i < 5; i++) send.pushCopy(null, 0, Buffer.alloc(20000, i));
    assert.ok(send.calls >= 1, 'pushing past 64 KiB of data flushed on its own');
    send.flush();
    assert.equal(send.sent, 5);
    const r = await got;
    const all = [...r.node, ...r.drained.map((x) => x.bytes)];
    assert.deepEqual(all.map((b) => [b.length, b[0]]), [0, 1, 2, 3, 4].map((i) => [20000, i]));
    assert.throws(() => send.push(null, 0, 70000), /70000 bytes/);
    assert.throws(() => new RecvBatch(0), /capacity/);
  } finally { rx.close(); tx.close(); }
});

test('IPv6: one batch sends to and reads from IPv6 peers (sockaddr_in6), each source its own address', async () => {
  const rx = await bound('::1');
  const tx = await bound('::1');
  const send = new SendBatch(fdOf(tx), 16);
  const recv = new RecvBatch(8, 512);
  try {
    const got = collect(rx, recv, 10);
    for (let i = 0; i < 10; i++) send.pushCopy(addr('::1'), rx.address().port, Buffer.from(`v6-${i}`));
    assert.equal(send.flush(), 10);
    const r = await got;
    assert.deepEqual([...r.node.map(String), ...r.drained.map((d) => d.bytes.toString())], Array.from({ length: 10 }, (_, i) => `v6-${i}`));
    for (const d of r.drained) assert.deepEqual([d.from, d.port], ['::1', tx.address().port]);
    assert.equal(recv.source(0), addr('::1'), 'the interned object, not a copy');
    // the attacker: an IPv4 address pushed to an IPv6-only socket is refused by the kernel, alone
    send.pushCopy(addr('127.0.0.1'), rx.address().port, Buffer.from('v4 on v6'));
    send.pushCopy(addr('::1'), rx.address().port, Buffer.from('after'));
    const next = collect(rx, recv, 1);
    assert.equal(send.flush(), 1);
    assert.equal(send.dropped, 1);
    assert.deepEqual((await next).node.map(String), ['after']);
  } finally { rx.close(); tx.close(); }
});

test('put64: an arena address + offset in two words, across every carry (low halves, low word), as the kernel reads it', () => {
  const ab = new ArrayBuffer(16);
  const u32 = new Uint32Array(ab), u16 = new Uint16Array(ab), view = new DataView(ab);
  const bases = [0x7f00_0000_1000n, 0x7f12_ffff_f000n, 0x7fff_8000_0000n, 0x7fab_c000_fff0n, 0x0000_5555_0000n, 0x7f00_ffff_0000n];
  const offs = [0, 1, 15, 0xffff, 0x10000, 0x1ffff, 262_144 + 4096, 0x7fff_ffff];
  for (const base of bases) {
    const hi = Number(base >> 32n), lo = Number(base & 0xffff_ffffn);
    for (const off of offs) {
      u32.fill(0xdeadbeef);
      put64(u16, u32, 0, hi, lo & 0xffff, lo >>> 16, off);
      assert.equal(view.getBigUint64(0, true), base + BigInt(off), `base ${base.toString(16)} + ${off}`);
      assert.equal(u32[2], 0xdeadbeef, 'nothing past its two words');
    }
  }
});

test('put64 makes no heap number per call in any tier (an address whose low word is ≥ 2^31: half of what mmap gives)', () => {
  // the interpreter alone (--max-opt=0): a sum over the whole low word was a heap number per call there
  const probe = `
    const { put64 } = await import(${JSON.stringify(new URL('../../../../src/sys/udp-batch.ts', import.meta.url).href)});
    const ab = new ArrayBuffer(64), u32 = new Uint32Array(ab), u16 = new Uint16Array(ab);
    const hi = 0x7f12, lo = 0xc000_1000;
    const run = (n) => { for (let i = 0; i < n; i++) put64(u16, u32, (i & 3) << 1, hi, lo & 0xffff, lo >>> 16, (i * 977) & 0x3ffff); };
    run(10_000);
    const h0 = process.memoryUsage().heapUsed;
    run(200_000);
    console.log((process.memoryUsage().heapUsed - h0) / 200_000);`;
  const out = execFileSync(process.execPath, ['--max-opt=0', '--max-semi-space-size=64', '--min-semi-space-size=64', '--input-type=module', '-e', probe]).toString();
  assert.ok(Number(out) < 1, `bytes per call: ${out.trim()}`);
});
