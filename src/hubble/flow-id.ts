/**
 * Flow UUIDs (flow.Flow.uuid), shaped as Hubble's (a random version-4 UUID's text) but made from
 * a random prefix per generator and a counter: a fresh randomUUID per flow was ~10% of the
 * agent's CPU per datapath event (its entropy pool refilled every 128 ids). The prefix holds the
 * random bits of a v4 UUID's first 80 bits (version and variant nibbles as randomUUID sets them),
 * the last 12 hex digits count. Unique within a generator; across agents and restarts as unlikely
 * to collide as 62 random bits make it.
 *
 * The count is two small integers, each formatted on its own: Number#toString(16) of a value past
 * 2^31 takes the floating-point path (~300 ns an id, more than randomUUID), of a small one ~40 ns.
 */
import { randomUUID } from 'node:crypto';

/** 0x100000..0xffffff: six hex digits each, no padding per id (the low digit group). */
const LOW_FIRST = 0x10_0000;
const LOW_END = 0x100_0000;

/**
 * One id sequence, its last id also in two parts: `head` (30 characters, shared by the next 15 M
 * ids) and `low`, the counter (id = head + low.toString(16)). The ring keeps an L7 flow's id as
 * the two (l7-parser.ts): the string of its own per flow is what a scavenge would copy.
 */
export interface FlowIdSource {
  /** a new id */
  next(): string;
  /**
   * A new id left in `head` and `low` only, its string not made: for a flow whose uuid is made
   * when it is read (the ring's compact flows, the L7 parser's lent scratch: l7-parser.ts).
   */
  advance(): void;
  /** the last id's head and counter, as next() left them */
  readonly head: string;
  readonly low: number;
}

export function createFlowIdSource(): FlowIdSource {
  let head = '';
  let high = LOW_END;
  let low = LOW_END;
  const src = {
    head: '',
    low: 0,
    advance(): void {
      if (low >= LOW_END) {
        if (++high >= LOW_END) {
          // 'xxxxxxxx-xxxx-4xxx-Nxxx-': the first 24 characters of a random v4 UUID
          head = randomUUID().slice(0, 24);
          high = 0;
        }
        head = head.slice(0, 24) + (LOW_END + high).toString(16).slice(1);
        low = LOW_FIRST;
      }
      src.head = head;
      src.low = low++;
    },
    next(): string {
      src.advance();
      return src.head + src.low.toString(16);
    },
  };
  return src;
}

export function createFlowIds(): () => string {
  const src = createFlowIdSource();
  return () => src.next();
}

/** A Flow whose uuid is lent (lentFlow): the flow, and how to give it an id. */
export interface LentFlow<F> {
  readonly flow: F;
  /** the flow's uuid is now head + low.toString(16), made when read */
  lend(head: string, low: number): void;
}

/**
 * `f` made again as a scratch flow (a builder's, refilled per event) whose uuid is made when a
 * reader reads it, from an id's two parts (FlowIdSource's head and low after advance()), as the
 * ring's compact flows make it: a flow nobody asks the uuid of makes no string (~56 B a flow).
 * The uuid is an accessor on the scratch's own prototype (one class per scratch, its id in the
 * closure), every other field an own data property: protobuf-es reads fields as message[name], so
 * clone, toBinary and toJson see the uuid; a spread ({...flow}) does not (use clone). Written (a
 * reader setting it), it is that string until the next lend.
 */
export function lentFlow<F extends { uuid: string }>(f: F): LentFlow<F> {
  let head = f.uuid;
  /** the counter; −1: `head` is the whole uuid */
  let low = -1;
  class Lent {
    get uuid(): string {
      return low < 0 ? head : head + low.toString(16);
    }
    set uuid(v: string) {
      head = v;
      low = -1;
    }
  }
  // object rest: a new object with fast properties (Object.defineProperty or delete on `f` itself
  // would turn it into a dictionary, every refill a hash lookup)
  const { uuid: _, ...rest } = f;
  const flow = Object.setPrototypeOf(rest, Lent.prototype) as F;
  return { flow, lend(h, l) { head = h; low = l; } };
}
