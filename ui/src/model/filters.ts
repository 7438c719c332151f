/**
 * The filter bar → Hubble FlowFilters, built the way `hubble observe` builds them from flags
 * (spec/hubble.md §4.2): fields that name one end (namespace, pod, label, port, FQDN) make a
 * source variant OR a destination variant; the others (verdict, protocol, HTTP method and
 * status, node) go in both. The upstream Observer applies them (src/hubble/filter.ts): the
 * browser never decides which flow matches.
 */
import { create } from '@bufbuild/protobuf';
import { FlowFilterSchema, Verdict, type FlowFilter } from '../../../src/hubble/gen/flow/flow_pb.js';
import { checkFilters, type UiFilters } from './filter-input.ts';

export { NO_FILTERS, FilterInputError, checkFilters, type UiFilters } from './filter-input.ts';

type Init = Record<string, unknown[]>;

/** The whitelist for these filters (empty = everything). Throws FilterInputError on a bad value. */
export function toFlowFilters(f: UiFilters): FlowFilter[] {
  checkFilters(f);
  const both: Init = {};
  const src: Init = {};
  const dst: Init = {};
  let sided = false;
  const t = (s: string) => s.trim();
  if (t(f.verdict)) both.verdict = [Verdict[t(f.verdict) as keyof typeof Verdict]];
  if (t(f.protocol)) both.protocol = [t(f.protocol).toLowerCase()];
  if (t(f.httpMethod)) both.httpMethod = [t(f.httpMethod).toUpperCase()];
  if (t(f.httpStatus)) both.httpStatusCode = [t(f.httpStatus)];
  if (t(f.node)) both.nodeName = [t(f.node)];
  const pod = t(f.pod);
  const ns = t(f.namespace);
  if (pod || ns) {
    sided = true;
    const v = pod.includes('/') ? pod : `${ns}/${pod}`;
    if (!ns && !pod.includes('/') && pod) src.sourcePod = dst.destinationPod = [`/${pod}`];
    else src.sourcePod = dst.destinationPod = [v];
  }
  if (t(f.label)) {
    sided = true;
    src.sourceLabel = dst.destinationLabel = [t(f.label)];
  }
  if (t(f.port)) {
    sided = true;
    src.sourcePort = dst.destinationPort = [t(f.port)];
  }
  if (t(f.fqdn)) {
    sided = true;
    src.sourceFqdn = dst.destinationFqdn = [t(f.fqdn)];
  }
  if (!sided) return Object.keys(both).length ? [create(FlowFilterSchema, both)] : [];
  return [create(FlowFilterSchema, { ...both, ...src }), create(FlowFilterSchema, { ...both, ...dst })];
}
