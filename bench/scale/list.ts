// In-process listing bench (issue 11 resync): one etcd of its own with N ipcache keys as the
// simulated nodes write them; lists them through the agent's store (followBytes) R times and
// prints wall time, the lister's CPU and etcd's CPU per listing (from /proc).
//   bin/node bench/scale/list.ts [--keys 300000] [--rounds 3] [--page 16384] [--dir /tmp/x] [--port 23790]
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { Etcd3 } from 'etcd3';
import { openEtcdStore } from '../../src/kvstore/etcd.ts';
import { IPCACHE_PREFIX, ipcacheValue } from '../../src/agent/cluster-keys.ts';
import type { EndpointRecord } from '../../src/agent/endpoints.ts';
import { ETCD_BINARY } from '../../src/lab/etcd.ts';

const arg = (n: string, d: string) => { const i = process.argv.indexOf(n); return i > 0 ? process.argv[i + 1]! : d; };
const KEYS = Number(arg('--keys', '300000'));
const ROUNDS = Number(arg('--rounds', '3'));
const PAGE = Number(arg('--page', '0')) || undefined;
const DIR = arg('--dir', `/tmp/membrane-listbench-${process.pid}`);
const PORT = Number(arg('--port', '23790'));
const keep = process.argv.includes('--keep');
const ep = `http://127.0.0.1:${PORT}`;
const cpu = (pid: number) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
const ip4 = (n: number) => `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

mkdirSync(DIR, { recursive: true });
const etcd = spawn(ETCD_BINARY, [`--name=lb`, `--data-dir=${DIR}/data`, `--listen-client-urls=${ep}`, `--advertise-client-urls=${ep}`,
  `--listen-peer-urls=http://127.0.0.1:${PORT + 1}`, `--initial-advertise-peer-urls=http://127.0.0.1:${PORT + 1}`, `--initial-cluster=lb=http://127.0.0.1:${PORT + 1}`,
  '--logger=zap', '--log-outputs=stderr', '--log-level=error'], { stdio: ['ignore', 'ignore', 'inherit'] });
const client = new Etcd3({ hosts: [ep] });
try {
  for (let i = 0; ; i++) { try { await client.get('x'); break; } catch { if (i > 200) throw new Error('etcd did not start'); await new Promise((r) => setTimeout(r, 100)); } }
  const have = Number((await client.kv.range({ key: Buffer.from(IPCACHE_PREFIX), range_end: Buffer.from('cilium/state/ip/v1/default0'), count_only: true })).count);
  if (have < KEYS) {
    const t = Date.now();
    for (let k = have; k < KEYS; k += 128) {
      const ops = [];
      for (let j = k; j < Math.min(KEYS, k + 128); j++) {
        const node = Math.floor(j / 30);
        const rec = { id: (j % 30) + 1, ip: ip4(((100 << 24) | (96 << 16)) + 32 * node + 1 + (j % 30)), identity: 60000 + (j % 1000), namespace: 'sim', pod: `sim${node}-p${j % 30}` } as EndpointRecord;
        ops.push(client.put(`${IPCACHE_PREFIX}${rec.ip}`).value(ipcacheValue(rec, `sim${node}`, ip4(((100 << 24) | (64 << 16)) + node))));
      }
      await client.if(`${IPCACHE_PREFIX}none`, 'Version', '==', 0).then(...ops).commit();
    }
    process.stderr.write(`filled ${KEYS - have} keys in ${((Date.now() - t) / 1000).toFixed(1)} s\n`);
  }
  const store = await openEtcdStore({ endpoints: [ep], ...(PAGE ? { listPageSize: PAGE } : {}) });
  for (let r = 0; r < ROUNDS; r++) {
    const c0 = process.cpuUsage(), e0 = cpu(etcd.pid!), t0 = Date.now();
    let n = 0, bytes = 0;
    let firstMs = 0;
    const stop = await store.followBytes(IPCACHE_PREFIX, (ev) => { if (!n) firstMs = Date.now() - t0; n++; if (ev.type === 'put') bytes += ev.value.length; }, { keys: () => [] });
    const wall = Date.now() - t0, c = process.cpuUsage(c0), e = cpu(etcd.pid!) - e0;
    stop();
    console.log(`listing ${n} keys (${(bytes / 2 ** 20).toFixed(0)} MiB values): wall ${wall} ms, first key ${firstMs} ms, lister CPU ${((c.user + c.system) / 1000).toFixed(0)} ms, etcd CPU ${(e * 1000).toFixed(0)} ms`);
  }
  await store.close();
} finally {
  client.close();
  etcd.kill('SIGTERM');
  if (!keep) rmSync(DIR, { recursive: true, force: true });
}
