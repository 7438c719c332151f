/**
 * The agent's kvstore and identity allocator, by mode:
 *   memory (no endpoint): a file-backed store for this node alone, identities restored from it
 *   etcd (`--kvstore-endpoint`): the cluster's store; identities cluster-wide (Cilium's
 *     allocator), this node's keys under its lease (Cilium's --kvstore-lease-ttl)
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from '../common/logger.ts';
import type { KVStore } from '../kvstore/types.ts';
import { openMemoryStore } from '../kvstore/memory.ts';
import { openEtcdStore } from '../kvstore/etcd.ts';
import { ClusterIdentityAllocator } from '../identity/cluster-allocator.ts';
import type { LocalIdentityAllocator } from '../identity/allocator.ts';
import { openPersistentAllocator } from './identity-store.ts';
import { MembraneError } from '../common/errors.ts';

export interface AgentKVStoreOptions {
  /** etcd endpoints; none: the memory store in `storeFile` */
  endpoints: string[];
  storeFile: string;
  ca?: string;
  cert?: string;
  key?: string;
  leaseTtlSeconds: number;
  identityGcIntervalMs: number;
  /** this node's slave-key suffix (its IPv4 address, as Cilium's GetNodeSuffix) */
  nodeSuffix: string;
  logger: Logger;
}

export async function openAgentKVStore(o: AgentKVStoreOptions): Promise<{ kv: KVStore; allocator: LocalIdentityAllocator; stop(): void }> {
  if (!o.endpoints.length) {
    const kv = await openMemoryStore({ file: o.storeFile });
    const { allocator, flush } = await openPersistentAllocator(kv);
    // the identities not mirrored yet go into the store before it closes (its close awaits the write)
    return { kv, allocator, stop: flush };
  }
  if (!Number.isInteger(o.leaseTtlSeconds) || o.leaseTtlSeconds < 2 || o.leaseTtlSeconds > 864_000) {
    throw new MembraneError('KVSTORE_CONFIG', `--kvstore-lease-ttl ${o.leaseTtlSeconds}: not a whole number of seconds in 2..864000`, { hint: "Cilium's default is 900 (15 min)" });
  }
  if (!Number.isInteger(o.identityGcIntervalMs) || o.identityGcIntervalMs < 0) {
    throw new MembraneError('KVSTORE_CONFIG', `--identity-gc-interval: not a whole number of seconds`, { hint: '0 turns this node\'s identity GC off' });
  }
  if (!!o.cert !== !!o.key) throw new MembraneError('KVSTORE_CONFIG', '--kvstore-cert and --kvstore-key go together', { hint: 'give both (the client certificate and its key), or neither' });
  const read = (f: string) => readFile(f).catch((e: unknown) => {
    throw new MembraneError('KVSTORE_CONFIG', `cannot read ${f}: ${(e as Error).message}`, { hint: 'check the --kvstore-ca/--kvstore-cert/--kvstore-key paths' });
  });
  const tls = o.ca ? { ca: await read(o.ca), ...(o.cert ? { cert: await read(o.cert), key: await read(o.key!) } : {}) } : undefined;
  const log = o.logger.child({ subsys: 'kvstore' });
  const kv = await openEtcdStore({ endpoints: o.endpoints, ...(tls ? { tls } : {}), leaseTtlSeconds: o.leaseTtlSeconds, log });
  const allocator = await ClusterIdentityAllocator.open({ kv, nodeSuffix: o.nodeSuffix, gcIntervalMs: o.identityGcIntervalMs, log: o.logger.child({ subsys: 'identity' }) });
  log.info({ endpoints: o.endpoints, leaseTtl: o.leaseTtlSeconds, identities: allocator.all().length }, 'kvstore: etcd connected, cluster identities loaded');
  return { kv, allocator, stop: () => allocator.stop() };
}
