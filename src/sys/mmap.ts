/**
 * Shared mappings of what the kernel lets a process map from an fd: a BPF ring buffer's pages
 * (ring.ts) and a BPF_F_MMAPABLE array's values (bpf.ts mmapArray). One home for libc's mmap and
 * munmap and for how a failed mmap reads (MAP_FAILED, the all-ones address).
 */
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
const mmap = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)');
const munmap = libc.func('int munmap(void *addr, size_t length)');

export const PROT_READ = 1;
export const PROT_WRITE = 2;
const MAP_SHARED = 1;

export interface SharedMapping {
  /** the mapped bytes (valid until unmap) */
  readonly buf: ArrayBuffer;
  /** ends the mapping (a second call does nothing): `buf` must not be touched after */
  unmap(): void;
}

/**
 * Maps `length` bytes of `fd` at `offset`, MAP_SHARED with `prot`; when the kernel refuses, throws
 * what `fail` makes of the errno.
 */
export function mapShared(fd: number, length: number, prot: number, offset: number, fail: (errno: number) => Error): SharedMapping {
  const p = mmap(null, length, prot, MAP_SHARED, fd, BigInt(offset));
  if (isMapFailed(p)) throw fail(koffi.errno());
  let mapped = true;
  return {
    buf: koffi.view(p, length),
    unmap() {
      if (mapped) munmap(p, length);
      mapped = false;
    },
  };
}

function isMapFailed(p: unknown): boolean {
  if (p === null || p === undefined) return true;
  try {
    return koffi.address(p) === 0xffffffffffffffffn;
  } catch {
    return false;
  }
}
