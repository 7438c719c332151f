/**
 * Readability by uv_poll (src/sys/udp-poll.ts) over real loopback sockets: Node reads nothing of a
 * watched socket, recvmmsg reads every datagram; a stopped watch lets the socket close, and a new
 * socket on the same fd number is watched again (libuv keeps one watcher per fd).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { RecvBatch, dgramFd } from '../../../../src/sys/udp-batch.ts';
import { liveWatches, watchReadable } from '../../../../src/sys/udp-poll.ts';

async function bound(): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}
const until = async (f: () => boolean, what: string): Promise<void> => {
  for (let i = 0; i < 300 && !f(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(f(), what);
};

test('a watched socket: every datagram read by recvmmsg in the callback, none by Node; stop, close, and the fd number watched again', async () => {
  const tx = await bound();
  try {
    for (let round = 0; round < 2; round++) {
      const rx = await bound();
      const fd = dgramFd(rx);
      const batch = new RecvBatch(8, 512);
      const got: string[] = [];
      let nodeRead = 0;
      rx.on('message', () => nodeRead++);
      const { watch: w } = watchReadable(rx, fd, () => {
        for (let n = batch.recv(fd); n > 0; n = batch.recv(fd)) {
          for (let i = 0; i < n; i++) got.push(batch.data.toString('latin1', batch.offset(i), batch.offset(i) + batch.length(i)));
        }
      });
      assert.ok(w, 'watched');
      for (let i = 0; i < 20; i++) tx.send(`r${round}d${i}`, rx.address().port, '127.0.0.1');
      await until(() => got.length === 20, `20 datagrams read (${got.length})`);
      assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => `r${round}d${i}`));
      assert.equal(nodeRead, 0, 'Node read none of them');
      w!.stop();
      w!.stop(); // twice is harmless
      await new Promise<void>((r) => rx.close(r));
    }
  } finally { tx.close(); }
});


test('every watch gives its uv_poll handle back: after 300 sockets watched, stopped and closed the live handles return to where they were', async () => {
  await until(() => liveWatches() === 0, 'no handle left from before');
  for (let round = 0; round < 3; round++) {
    const open: { s: Socket; stop(): void }[] = [];
    for (let i = 0; i < 100; i++) {
      const s = await bound();
      const r = watchReadable(s, dgramFd(s), () => {});
      assert.ok(r.watch, `watched (${r.reason})`);
      open.push({ s, stop: () => r.watch!.stop() });
    }
    assert.equal(liveWatches(), 100, 'one handle per watched socket');
    for (const o of open) { o.stop(); await new Promise<void>((r) => o.s.close(r)); }
    // libuv's close callback runs in its closing phase (a later turn): only then is the handle freed
    await until(() => liveWatches() === 0, `round ${round}: handles freed (${liveWatches()} left)`);
  }
});
