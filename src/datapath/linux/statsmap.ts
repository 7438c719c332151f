/** The kernel programs' per-CPU counters (mb_stats) and the ring's loss counter (mb_lost). */
import type { BpfMap } from '../../sys/bpf.ts';
import { STAT_NAMES, decodePerCpuSum, encodeU32 } from './codec.ts';

export type Counters = Record<(typeof STAT_NAMES)[number], bigint>;

/** One per-CPU counter summed over the CPUs (0 when absent). */
export function perCpuCounter(m: BpfMap, idx: number): bigint {
  const v = m.lookup(encodeU32(idx));
  return v ? decodePerCpuSum(v) : 0n;
}

/** Every named counter of mb_stats. */
export function readCounters(stats: BpfMap): Counters {
  const out = {} as Counters;
  STAT_NAMES.forEach((n, i) => (out[n] = perCpuCounter(stats, i)));
  return out;
}
