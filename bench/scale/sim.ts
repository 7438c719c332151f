// Simulated nodes for bench/scale: one process writes, for its share of node indices, what a
// membrane (Cilium) agent writes to etcd, with the same keys, value formats and leases:
//   one session lease per node (leaseGrant, as the agent's session),
//   cilium/state/nodes/v1/default/<node>                  (leased; types.Node JSON, nodeValue())
//   cilium/state/identities/v1/value/<labels>/<node ip>   (leased; "<id>", the node's use of an identity)
//   cilium/state/ip/v1/default/<pod ip>                   (leased; IPIdentityPair JSON, ipcacheValue())
// Master keys (identities/v1/id/<id>) are created create-only (Txn `version == 0`), as the
// allocator does. Identity churn: a new master key + a node's slave key, later both deleted (the
// release and the GC's delete). Commands come as JSON lines on stdin, answers on stdout.
//   bin/node bench/scale/sim.ts <etcd endpoint> <worker index> <workers>
// Simulated addresses are in 100.64.0.0/10 (never configured on any interface or route: they exist
// only as etcd values and ipcache map entries).
import { createInterface } from 'node:readline';
import { Etcd3 } from 'etcd3';
import { nodeValue, ipcacheValue, NODES_PREFIX, IPCACHE_PREFIX } from '../../src/agent/cluster-keys.ts';
import type { EndpointRecord } from '../../src/agent/endpoints.ts';
import { ID_PREFIX, VALUE_PREFIX } from '../../src/identity/cluster-allocator.ts';

const [endpoint, widx, wcount] = [process.argv[2]!, Number(process.argv[3]), Number(process.argv[4])];
const client = new Etcd3({ hosts: [endpoint] });
export const EPS_PER_NODE = 30;
/** identities in the pool; each simulated node uses 10 of them (3 pods per identity) */
export const POOL = 1000;
export const POOL_BASE = 60000;
const IDS_PER_NODE = 10;
const TTL = 900;
const INFLIGHT = 128;

const ip4 = (n: number) => `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
/** node k (1-based): 100.64.0.0 + k; its pods 100.96.0.0 + 32k + 1..30 */
export const simNodeIp = (k: number) => ip4(((100 << 24) | (64 << 16)) + k);
export const simPodIp = (k: number, e: number) => ip4(((100 << 24) | (96 << 16)) + 32 * k + 1 + e);
export const poolLabels = (j: number) => `k8s:app=sim-${j};k8s:io.kubernetes.pod.namespace=sim;`;

let writes = 0;
const leases = new Map<number, string>();
let grown = 0; // nodes registered: indices 1..grown (this worker's share)

/**
 * Keeps every simulated node's lease alive, as each agent keeps its session lease (a keepalive
 * every TTL/3). The leases were granted and never renewed: a run longer than the TTL (15 min)
 * lost the first stages' nodes (the 40-minute curve's 10,000-node stage held about 8,000). One
 * LeaseKeepAlive stream per simulator carries all of its leases' keepalives (etcd3's Lease object
 * would open a stream and a timer per lease: 5,000 per process), spread over the interval so
 * etcd never gets them in one burst. A lost stream is opened again on the next round.
 */
type KeepAliveStream = Awaited<ReturnType<typeof client.leaseClient.leaseKeepAlive>>;
let kaStream: KeepAliveStream | undefined;
let kaAnswers = 0;
let kaExpired = 0;
async function keepAliveRound(): Promise<void> {
  if (!kaStream) {
    const s = await client.leaseClient.leaseKeepAlive();
    s.on('data', (r: { TTL: string }) => { kaAnswers++; if (Number(r.TTL) <= 0) kaExpired++; });
    s.on('error', () => { if (kaStream === s) kaStream = undefined; });
    s.on('end', () => { if (kaStream === s) kaStream = undefined; });
    kaStream = s;
  }
  const ids = [...leases.values()];
  // spread over a tenth of the interval: ~170 a second for 5,000 leases at TTL 900
  const step = Math.max(1, Math.ceil(ids.length / (TTL * 100 / 3 / 250)));
  for (let i = 0; i < ids.length && kaStream; i += step) {
    for (const id of ids.slice(i, i + step)) kaStream.write({ ID: id });
    await new Promise((r) => setTimeout(r, 250));
  }
}
const kaTimer = setInterval(() => { void keepAliveRound().catch(() => { kaStream = undefined; }); }, TTL * 1000 / 3);
kaTimer.unref();

/** Runs `jobs` with at most INFLIGHT in flight (10,000 agents write at the same time). */
async function pool(jobs: (() => Promise<unknown>)[], deadline: number): Promise<void> {
  let i = 0;
  const run = async () => {
    while (i < jobs.length) {
      if (Date.now() > deadline) throw new Error('sim: deadline passed while writing');
      await jobs[i++]!();
    }
  };
  await Promise.all(Array.from({ length: INFLIGHT }, run));
}

const put = (key: string, value: string, lease?: string) => async () => {
  const p = client.put(key).value(value);
  await (lease ? p.lease(lease) : p);
  writes++;
};

async function ensureMasters(deadline: number): Promise<void> {
  // create-only, as the allocator: two workers racing for one number, one wins
  await pool(Array.from({ length: POOL }, (_, j) => async () => {
    const key = `${ID_PREFIX}${POOL_BASE + j}`;
    await client.if(key, 'Version', '==', 0).then(client.put(key).value(poolLabels(j))).commit();
    writes++;
  }), deadline);
}

async function registerNode(k: number, leased: boolean): Promise<void> {
  let lease: string | undefined;
  if (leased) {
    const g = await client.leaseClient.leaseGrant({ TTL, ID: 0 });
    lease = String(g.ID);
    leases.set(k, lease);
    writes++;
  }
  const withLease = <T extends { lease(l: string): T }>(o: T) => (lease ? o.lease(lease) : o);
  const name = `sim${k}`;
  const nodeIp = simNodeIp(k);
  const ids: number[] = [];
  for (let i = 0; i < IDS_PER_NODE; i++) ids.push(POOL_BASE + ((k * 7 + i * 101) % POOL));
  // One Txn per node (41 puts, under etcd's 128 ops per Txn): the keys, values and lease an agent
  // writes, in one raft entry instead of 41 (an agent writes them one by one; the bulk load would
  // not fit the time bound on this machine otherwise). Probes and churn are single writes.
  const ops = [withLease(client.put(`${NODES_PREFIX}default/${name}`).value(nodeValue({ name, cluster: 'default', ip: nodeIp }, `boot-${k}`)))];
  for (const id of ids) ops.push(withLease(client.put(`${VALUE_PREFIX}${poolLabels(id - POOL_BASE)}${nodeIp}`).value(String(id))));
  for (let e = 0; e < EPS_PER_NODE; e++) {
    const rec = { id: e + 1, ip: simPodIp(k, e), identity: ids[e % IDS_PER_NODE]!, namespace: 'sim', pod: `${name}-p${e}` } as EndpointRecord;
    ops.push(withLease(client.put(`${IPCACHE_PREFIX}${rec.ip}`).value(ipcacheValue(rec, name, nodeIp))));
  }
  const reqs = await Promise.all(ops.map((o) => o.op()));
  await client.kv.txn({ compare: [], success: reqs, failure: [] });
  writes += ops.length;
}

async function grow(to: number, deadline: number, leased: boolean): Promise<void> {
  const jobs: (() => Promise<void>)[] = [];
  for (let k = grown + 1; k <= to; k++) if (k % wcount === widx) jobs.push(() => registerNode(k, leased));
  grown = to;
  // a node's own writes are in order (like one agent); many nodes at once
  let i = 0;
  await Promise.all(Array.from({ length: Math.max(1, INFLIGHT / 8) }, async () => {
    while (i < jobs.length) {
      if (Date.now() > deadline) throw new Error('sim: deadline passed while registering');
      await jobs[i++]!();
    }
  }));
}

/** Identity churn for `secs` at `rate` per second: allocate a fresh identity on a node, release it 1 s later. */
async function churn(secs: number, rate: number): Promise<number> {
  const end = Date.now() + secs * 1000;
  let n = 0;
  const pending: Promise<void>[] = [];
  while (Date.now() < end && n < secs * rate + 1) {
    const id = 40000 + widx * 5000 + (n % 5000);
    const k = widx + 1;
    const labels = `k8s:app=churn-${id};k8s:io.kubernetes.pod.namespace=sim;`;
    const master = `${ID_PREFIX}${id}`;
    const slave = `${VALUE_PREFIX}${labels}${simNodeIp(k)}`;
    const lease = leases.get(k) ?? leases.values().next().value;
    pending.push((async () => {
      await client.if(master, 'Version', '==', 0).then(client.put(master).value(labels)).commit();
      await put(slave, String(id), lease)();
      writes++;
      await new Promise((r) => setTimeout(r, 1000));
      await client.delete().key(slave).exec();
      await client.delete().key(master).exec();
      writes += 2;
    })().catch(() => {}));
    n++;
    await new Promise((r) => setTimeout(r, 1000 / rate));
  }
  await Promise.all(pending);
  return n;
}

const rl = createInterface({ input: process.stdin });
const reply = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
reply({ ready: true });
for await (const line of rl) {
  // noLease: the keys outlive this process (a fixed data set for bench/scale/apply.ts)
  const cmd = JSON.parse(line) as { cmd: string; to?: number; secs?: number; rate?: number; deadlineMs?: number; noLease?: boolean };
  const t0 = Date.now();
  const w0 = writes;
  try {
    if (cmd.cmd === 'masters') await ensureMasters(t0 + (cmd.deadlineMs ?? 60_000));
    else if (cmd.cmd === 'grow') await grow(cmd.to!, t0 + (cmd.deadlineMs ?? 300_000), !cmd.noLease);
    else if (cmd.cmd === 'churn') await churn(cmd.secs!, cmd.rate!);
    else if (cmd.cmd === 'keepalive') await keepAliveRound();
    else if (cmd.cmd === 'stop') {
      clearInterval(kaTimer);
      kaStream?.end();
      for (const l of leases.values()) await client.leaseClient.leaseRevoke({ ID: l }).catch(() => {});
      client.close();
      reply({ ok: true, ms: Date.now() - t0 });
      process.exit(0);
    }
    reply({ ok: true, writes: writes - w0, ms: Date.now() - t0, leases: leases.size, keepalives: kaAnswers, expired: kaExpired });
  } catch (e) {
    reply({ ok: false, error: (e as Error).message, writes: writes - w0, ms: Date.now() - t0 });
  }
}
