/**
 * Flow UUIDs (flow.Flow.uuid), shaped as Hubble's (a random version-4 UUID's text) but made from
 * a random prefix per generator and a counter: a fresh randomUUID per flow was ~10% of the
 * agent's CPU per datapath event (its entropy pool refilled every 128 ids). The prefix holds the
 * random bits of a v4 UUID's first 80 bits (version and variant nibbles as randomUUID sets them),
 * the last 12 hex digits count. Unique within a generator; across agents and restarts as unlikely
 * to collide as 62 random bits make it.
 */
import { randomUUID } from 'node:crypto';

/** 2^44: every counter value from here to 2^48 has exactly 12 hex digits (no padding per id). */
const COUNT_FIRST = 0x1000_0000_0000;
const COUNT_END = 0x1_0000_0000_0000;

export function createFlowIds(): () => string {
  let prefix = '';
  let n = COUNT_END;
  return () => {
    if (n >= COUNT_END) {
      // 'xxxxxxxx-xxxx-4xxx-Nxxx-': the first 24 characters of a random v4 UUID
      prefix = randomUUID().slice(0, 24);
      n = COUNT_FIRST + Math.floor(Math.random() * 0x1000_0000);
    }
    return prefix + (n++).toString(16);
  };
}
