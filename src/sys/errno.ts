/** An errno's name (ECONNRESET) for messages: one table for every system call wrapper in src/sys. */
import { constants as osConstants } from 'node:os';

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

/** `e` positive or negative (libbpf and libuv return -errno) */
export function errnoName(e: number): string {
  return ERRNO_NAMES.get(Math.abs(e)) ?? `errno ${Math.abs(e)}`;
}
