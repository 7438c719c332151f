/**
 * Pod addresses from a node's pod CIDR, file-backed so a restarted agent hands every endpoint
 * the address it had. The CIDR's first address is the gateway (membrane_host in host mode, the
 * node's router in the lab); the pool is the rest but the broadcast address. Keys are
 * `namespace/pod`. The one pod-CIDR allocator: host mode (src/cni/host-provider.ts) and the
 * lab's nodes (src/lab/ipam.ts, with their own error codes) both use it.
 */
import { readFile } from 'node:fs/promises';
import { MembraneError } from '../common/errors.ts';
import { createSerial } from './serial.ts';
import { writeFileAtomic } from './atomic-file.ts';

export interface CidrPool { network: number; size: number; gateway: string; cidr: string }

const toInt = (ip: string) => ip.split('.').reduce((a, o) => (a << 8) + Number(o), 0) >>> 0;
export const intToIp = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

export function parseCidr(cidr: string): CidrPool {
  const [addr, len] = cidr.split('/') as [string, string];
  const bits = Number(len);
  const size = 2 ** (32 - bits);
  const network = (toInt(addr) & (bits === 0 ? 0 : (~0 << (32 - bits)))) >>> 0;
  return { network, size, gateway: intToIp(network + 1), cidr: `${intToIp(network)}/${bits}` };
}

export function inPool(pool: CidrPool, ip: string): boolean {
  const n = toInt(ip);
  return n >= pool.network && n < pool.network + pool.size;
}

export interface CidrIpam {
  allocate(key: string): Promise<string>;
  release(key: string): Promise<void>;
  lookup(key: string): Promise<string | undefined>;
  all(): Promise<Record<string, string>>;
}

/** What an unreadable file and a full pool are called by the allocator's owner (ERRORS.md). */
export interface IpamErrors {
  corrupt: { code: string; hint: string };
  exhausted: { code: string; message: string; hint: string };
}

const HOST_ERRORS = (pool: CidrPool): IpamErrors => ({
  corrupt: { code: 'CNI_IPAM_CORRUPT', hint: 'stop the agent, remove the file and restart it (containers get new addresses on their next ADD)' },
  exhausted: { code: 'CNI_IPAM_EXHAUSTED', message: `no free address in the pod CIDR ${pool.cidr}`, hint: 'remove containers, or give the agent a larger --pod-cidr' },
});

export function createCidrIpam(file: string, pool: CidrPool, errors: IpamErrors = HOST_ERRORS(pool)): CidrIpam {
  const serial = createSerial();
  async function load(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await readFile(file, 'utf8')) as Record<string, string>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new MembraneError(errors.corrupt.code, `cannot read ${file}: ${(e as Error).message}`, { hint: errors.corrupt.hint });
    }
  }
  async function save(m: Record<string, string>): Promise<void> {
    await writeFileAtomic(file, JSON.stringify(m, null, 1), { mkdir: true });
  }
  return {
    allocate: (key: string) => serial(async () => {
      const m = await load();
      const have = m[key];
      if (have && inPool(pool, have)) return have;
      const used = new Set(Object.values(m));
      for (let i = 2; i < pool.size - 1; i++) {
        const ip = intToIp(pool.network + i);
        if (!used.has(ip)) {
          m[key] = ip;
          await save(m);
          return ip;
        }
      }
      throw new MembraneError(errors.exhausted.code, errors.exhausted.message, { hint: errors.exhausted.hint });
    }),
    release: (key: string) => serial(async () => {
      const m = await load();
      if (!(key in m)) return;
      delete m[key];
      await save(m);
    }),
    lookup: (key: string) => serial(async () => (await load())[key]),
    all: () => serial(load),
  };
}
