/**
 * Pod IPAM for one node: 10.244.<k>.2–254, file-backed (ipam.json in the node's state dir) so a
 * restarted agent hands every pod the address it had; the same pod always gets the same IP.
 */
import { readFile, writeFile, rename, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { MembraneError } from '../common/errors.ts';
import { POD_CIDR_PREFIX } from './names.ts';

export interface PodIpam {
  allocate(key: string): Promise<string>;
  release(key: string): Promise<void>;
  lookup(key: string): Promise<string | undefined>;
  all(): Promise<Record<string, string>>;
}

export function createPodIpam(file: string, nodeIndex: number): PodIpam {
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const p = chain.then(f, f);
    chain = p.catch(() => {});
    return p;
  };
  async function load(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await readFile(file, 'utf8')) as Record<string, string>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new MembraneError('LAB_IPAM_CORRUPT', `cannot read ${file}: ${(e as Error).message}`, { hint: 'run `membrane down` and `membrane up` to rebuild the lab' });
    }
  }
  async function save(m: Record<string, string>): Promise<void> {
    await mkdir(dirname(file), { recursive: true });
    const tmp = `${file}.tmp`;
    await writeFile(tmp, JSON.stringify(m, null, 1));
    await rename(tmp, file);
  }
  return {
    allocate: (key) => serial(async () => {
      const m = await load();
      const have = m[key];
      if (have) return have;
      const used = new Set(Object.values(m));
      for (let n = 2; n <= 254; n++) {
        const ip = `${POD_CIDR_PREFIX}.${nodeIndex}.${n}`;
        if (!used.has(ip)) {
          m[key] = ip;
          await save(m);
          return ip;
        }
      }
      throw new MembraneError('LAB_IPAM_EXHAUSTED', `node${nodeIndex}: no free pod address in ${POD_CIDR_PREFIX}.${nodeIndex}.0/24 (253 pods)`, { hint: 'delete pods or add a node (`membrane up --nodes N`)' });
    }),
    release: (key) => serial(async () => {
      const m = await load();
      if (!(key in m)) return;
      delete m[key];
      await save(m);
    }),
    lookup: (key) => serial(async () => (await load())[key]),
    all: () => serial(load),
  };
}
