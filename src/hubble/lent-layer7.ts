/**
 * A borrowed HTTP response flow's Layer7 (the L7 parser's scratch, refilled per response) whose
 * latencyNs, a protobuf uint64 and so a BigInt, is made only when a reader reads it: a BigInt per
 * response was most of what the agent still allocated per proxied HTTP record (~20 B a record of
 * ~26, heap sampling of bench/tls/standin-ab.ts), and its one per-record reader, the http metric,
 * wants the number back (latencyNsOf: no BigInt). As lentFlow's uuid (flow-id.ts): latencyNs is an
 * accessor on the scratch's own prototype (its state in the closure), every other field an own
 * data property; protobuf-es reads fields as message[name] (clone, toBinary, toJson see it), a
 * spread does not (use clone).
 *
 * latencyNsOf knows the Layer7 lent last by identity and reads its number from a Float64Array: a
 * brand check (a private field's `in`, instanceof) per response cost more CPU than the BigInt it
 * saved (standin-ab.ts, in-process A/B against the BigInt per response: ~5 % slower per record).
 */
import { L7FlowType, type Layer7 } from './gen/flow/flow_pb.js';

/** the Layer7 lent last (any parser's) and its latency in ns */
let lastLent: Layer7 | undefined;
const LAST_NS = new Float64Array(1);

export interface LentResponseL7 {
  readonly l7: Layer7;
  /** l7 is now the response Layer7 of `record` with a latency of `ns` (whole ns, ≥ 0: BigInt(ns) is its latencyNs) */
  lend(ns: number, record: Layer7['record']): void;
}

export function lentResponseL7(record: Layer7['record']): LentResponseL7 {
  // a Float64Array, not a closure variable: a latency past 2^30 ns would be a heap number per lend
  const ns = new Float64Array(1);
  /** latencyNs once read (until the next lend) */
  let big: bigint | undefined;
  class Lent {
    get latencyNs(): bigint {
      return (big ??= BigInt(ns[0]!));
    }
    /** written (a reader setting it): that value until the next lend */
    set latencyNs(v: bigint) {
      big = v;
      ns[0] = Number(v);
      if (lastLent === l7) LAST_NS[0] = ns[0];
    }
  }
  const l7 = Object.setPrototypeOf({ $typeName: 'flow.Layer7', type: L7FlowType.RESPONSE, record }, Lent.prototype) as Layer7;
  return {
    l7,
    lend(n, r) {
      ns[0] = n;
      big = undefined;
      l7.record = r;
      lastLent = l7;
      LAST_NS[0] = n;
    },
  };
}

/** Number(l7.latencyNs), without making the BigInt of the Layer7 lent last. */
export function latencyNsOf(l7: Layer7): number {
  return l7 === lastLent ? LAST_NS[0]! : Number(l7.latencyNs);
}
