/**
 * A borrowed HTTP response flow's Layer7 (the L7 parser's scratch, refilled per response) whose
 * latencyNs, a protobuf uint64 and so a BigInt, is made only when a reader reads it: a BigInt per
 * response was most of what the agent still allocated per proxied HTTP record (~20 B a record of
 * ~26, heap sampling of bench/tls/standin-ab.ts), and its one per-record reader, the http metric,
 * wants the number back (latencyNsOf: no BigInt). As lentFlow's uuid (flow-id.ts): latencyNs is an
 * accessor on the class's prototype, every other field an own data property; protobuf-es reads
 * fields as message[name] (clone, toBinary, toJson see it), a spread does not (use clone).
 */
import { L7FlowType, type Layer7 } from './gen/flow/flow_pb.js';

class LentResponseL7 {
  readonly $typeName = 'flow.Layer7';
  readonly type = L7FlowType.RESPONSE;
  record: Layer7['record'];
  /** the latency in whole ns, as a number (≥ 0) */
  #ns = 0;
  /** latencyNs once read (until the next lend) */
  #big: bigint | undefined = undefined;
  constructor(record: Layer7['record']) {
    this.record = record;
  }
  get latencyNs(): bigint {
    return (this.#big ??= BigInt(this.#ns));
  }
  /** written (a reader setting it): that value until the next lend */
  set latencyNs(v: bigint) {
    this.#big = v;
    this.#ns = Number(v);
  }
  static lend(l7: LentResponseL7, ns: number, record: Layer7['record']): void {
    l7.#ns = ns;
    l7.#big = undefined;
    l7.record = record;
  }
  static nsOf(l7: Layer7): number {
    return #ns in l7 ? (l7 as unknown as LentResponseL7).#ns : Number(l7.latencyNs);
  }
}

/** A response Layer7 of `record` whose latencyNs is made when read (lendLatency sets what it will be). */
export function lentResponseL7(record: Layer7['record']): Layer7 {
  return new LentResponseL7(record) as unknown as Layer7;
}

/**
 * Refills `l7` (lentResponseL7's) as the response Layer7 of `record` with a latency of `ns` (whole
 * ns, ≥ 0: BigInt(ns) is its latencyNs); a Layer7 of another kind is not one to refill (false).
 */
export function lendLatency(l7: Layer7, ns: number, record: Layer7['record']): boolean {
  if (!(l7 instanceof LentResponseL7)) return false;
  LentResponseL7.lend(l7, ns, record);
  return true;
}

/** Number(l7.latencyNs), without making the BigInt of a lent Layer7. */
export function latencyNsOf(l7: Layer7): number {
  return LentResponseL7.nsOf(l7);
}
