/**
 * Kubernetes NetworkPolicy → rules, as Cilium translates it (spec §4.10): podSelector in the
 * policy's namespace, peers (pods, namespaces by their labels, ipBlock as a CIDR set), ports with
 * endPort and named ports; rules present in a direction are enforced even if policyTypes omits it.
 */
import type { NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort } from '../api/types.ts';
import { resourceKey } from '../api/types.ts';
import { LabelSource } from '../labels/labels.ts';
import { compileRequirements, requirement, show, validateSelector, type Requirement } from '../labels/selector.ts';
import { labelPeer, WILDCARD_PEER, type PeerSelector } from './selectors.ts';
import type { PolicyEntry, PortSpec, TranslatedRule } from './rules.ts';
import { PROTO_BY_NAME, isNamedPort, rangeToPrefixes } from './ports.ts';
import { NS_KEY, NS_LABELS_PREFIX, isNamespaceReq, list, selectorReqs, type Ctx, type Path } from './translate-context.ts';
import { cidrSetPeers } from './translate-peers.ts';

function npPeer(ctx: Ctx, peer: NetworkPolicyPeer, path: Path): PeerSelector[] {
  if (!peer || typeof peer !== 'object') { ctx.issue('POLICY_PEER_INVALID', path, 'peer must be an object'); return []; }
  const hasPod = peer.podSelector !== undefined && peer.podSelector !== null;
  const hasNs = peer.namespaceSelector !== undefined && peer.namespaceSelector !== null;
  const hasIp = peer.ipBlock !== undefined && peer.ipBlock !== null;
  if (hasIp && (hasPod || hasNs)) { ctx.issue('POLICY_PEER_INVALID', path, 'may not specify both ipBlock and another peer'); return []; }
  if (!hasIp && !hasPod && !hasNs) { ctx.issue('POLICY_PEER_INVALID', path, 'must specify a peer'); return []; }
  if (hasIp) {
    if (typeof peer.ipBlock!.cidr !== 'string' || peer.ipBlock!.cidr === '') { ctx.issue('POLICY_CIDR_INVALID', [...path, 'ipBlock', 'cidr'], 'required field is missing'); return []; }
    return cidrSetPeers(ctx, [{ cidr: peer.ipBlock!.cidr, ...(peer.ipBlock!.except ? { except: peer.ipBlock!.except } : {}) }], [...path, 'ipBlock']).map((p) => p);
  }
  const podReqs = hasPod ? selectorReqs(ctx, peer.podSelector, [...path, 'podSelector'], LabelSource.k8s) : [];
  if (!podReqs) return [];
  if (!hasNs) return [labelPeer([...podReqs.filter((q) => !isNamespaceReq(q)), requirement(`k8s:${NS_KEY}`, 'In', [ctx.namespace])])];
  const nsProblems = validateSelector(peer.namespaceSelector);
  for (const p of nsProblems) ctx.issue('POLICY_SELECTOR_INVALID', [...path, 'namespaceSelector', ...p.path], p.message);
  if (nsProblems.length) return [];
  const nsSel = peer.namespaceSelector!;
  const nsReqs: Requirement[] = [];
  for (const [k, v] of Object.entries(nsSel.matchLabels ?? {})) nsReqs.push(requirement(`k8s:${NS_LABELS_PREFIX}.${k}`, 'In', [v]));
  for (const e of nsSel.matchExpressions ?? []) nsReqs.push(requirement(`k8s:${NS_LABELS_PREFIX}.${e.key}`, e.operator, e.values ?? []));
  if (nsReqs.length === 0) nsReqs.push(requirement(`k8s:${NS_KEY}`, 'Exists'));
  return [labelPeer([...podReqs, ...nsReqs])];
}

function npPorts(ctx: Ctx, ports: NetworkPolicyPort[], path: Path): PortSpec[] | undefined {
  const out: PortSpec[] = [];
  let ok = true;
  ports.forEach((p, i) => {
    const pp = [...path, i];
    if (!p || typeof p !== 'object') { ctx.issue('POLICY_PORT_INVALID', pp, 'port entry must be an object'); ok = false; return; }
    const protoText = show(p.protocol ?? 'TCP').toUpperCase();
    if (!['TCP', 'UDP', 'SCTP'].includes(protoText)) { ctx.issue('POLICY_PROTOCOL_INVALID', [...pp, 'protocol'], `invalid protocol "${show(p.protocol)}"`, 'protocols: TCP, UDP, SCTP'); ok = false; return; }
    const proto = PROTO_BY_NAME[protoText]!;
    if (p.port === undefined || p.port === null || p.port === '') {
      if (p.endPort !== undefined) { ctx.issue('POLICY_PORT_INVALID', [...pp, 'endPort'], 'endPort may not be specified without port'); ok = false; return; }
      out.push({ proto, port: 0, plen: 0 });
      return;
    }
    const text = show(p.port).trim();
    if (protoText === 'SCTP' && text !== '0') {
      ctx.issue('POLICY_PROTOCOL_UNSUPPORTED', [...pp, 'port'], 'SCTP port rules are not enforced: the datapath does not read SCTP ports', 'leave out port to match every SCTP port, or select the peer alone');
      ok = false;
      return;
    }
    if (typeof p.port === 'string' && isNamedPort(text)) {
      if (p.endPort !== undefined) { ctx.issue('POLICY_PORT_INVALID', [...pp, 'endPort'], 'endPort may not be specified with a named port'); ok = false; return; }
      out.push({ proto, name: text.toLowerCase() });
      return;
    }
    if (!/^\d+$/.test(text) || Number(text) > 65535) { ctx.issue('POLICY_PORT_INVALID', [...pp, 'port'], `unable to parse port: "${text}"`); ok = false; return; }
    const port = Number(text);
    if (port === 0) { out.push({ proto, port: 0, plen: 0 }); return; }
    let hi = port;
    if (p.endPort !== undefined && p.endPort !== null) {
      if (!Number.isInteger(p.endPort) || p.endPort < port || p.endPort > 65535) {
        ctx.issue('POLICY_PORT_INVALID', [...pp, 'endPort'], 'endPort must be greater than or equal to port', 'endPort is an inclusive upper bound');
        ok = false;
        return;
      }
      hi = p.endPort;
    }
    for (const b of rangeToPrefixes(port, hi)) out.push({ proto, port: b.port, plen: b.plen });
  });
  return ok ? out : undefined;
}

export function translateNetworkPolicy(ctx: Ctx, np: NetworkPolicy): TranslatedRule | undefined {
  const spec = np.spec;
  if (!spec || typeof spec !== 'object') { ctx.issue('POLICY_EMPTY', ['spec'], 'NetworkPolicy must have a spec'); return undefined; }
  if (spec.policyTypes !== undefined && spec.policyTypes !== null && !Array.isArray(spec.policyTypes)) ctx.issue('POLICY_TYPE_INVALID', ['spec', 'policyTypes'], 'must be a list of Ingress/Egress');
  const types = list(spec.policyTypes);
  types.forEach((t, i) => { if (t !== 'Ingress' && t !== 'Egress') ctx.issue('POLICY_TYPE_INVALID', ['spec', 'policyTypes', i], `invalid policyType "${show(t)}"`, 'Ingress or Egress'); });
  const subjReqs = selectorReqs(ctx, spec.podSelector ?? {}, ['spec', 'podSelector'], LabelSource.k8s);
  const entries: PolicyEntry[] = [];
  const sections = [['ingress', 'from'], ['egress', 'to']] as const;
  for (const [dir, peerField] of sections) {
    const rules = spec[dir];
    if (rules !== undefined && rules !== null && !Array.isArray(rules)) { ctx.issue('POLICY_RULE_INVALID', ['spec', dir], 'must be a list'); continue; }
    list(rules).forEach((rule, i) => {
      const path = ['spec', dir, i];
      if (!rule || typeof rule !== 'object' || Array.isArray(rule)) { ctx.issue('POLICY_RULE_INVALID', path, 'rule must be an object'); return; }
      const peersRaw = (rule as Record<string, unknown>)[peerField];
      const peers: PeerSelector[] = [];
      if (peersRaw !== undefined && peersRaw !== null && !Array.isArray(peersRaw)) { ctx.issue('POLICY_RULE_INVALID', [...path, peerField], 'must be a list'); return; }
      if (!peersRaw || peersRaw.length === 0) peers.push(WILDCARD_PEER);
      else (peersRaw as NetworkPolicyPeer[]).forEach((p, j) => peers.push(...npPeer(ctx, p, [...path, peerField, j])));
      const portsRaw = list((rule as { ports?: NetworkPolicyPort[] } | null)?.ports);
      const ports = portsRaw.length ? npPorts(ctx, portsRaw, [...path, 'ports']) : null;
      if (ports === undefined || peers.length === 0) return;
      const dedup = [...new Map(peers.map((p) => [p.key, p])).values()];
      entries.push(Object.freeze({ direction: dir, verdict: 'allow', peers: Object.freeze(dedup), ports: ports && Object.freeze(ports), l7: null, auth: undefined, origin: ctx.origin(path) }));
    });
  }
  if (ctx.issues.length || !subjReqs) return undefined;
  const hasIn = list(spec.ingress).length > 0;
  const hasEg = list(spec.egress).length > 0;
  const dd = {
    ingress: hasIn || types.includes('Ingress') || !types.includes('Egress'),
    egress: hasEg || types.includes('Egress'),
  };
  return Object.freeze({
    policyKey: resourceKey(np), index: 0,
    subject: Object.freeze({ kind: 'endpoint', selector: compileRequirements([...subjReqs.filter((q) => !isNamespaceReq(q)), requirement(`k8s:${NS_KEY}`, 'In', [ctx.namespace])]) }),
    defaultDeny: Object.freeze(dd),
    entries: Object.freeze(entries),
    origin: ctx.origin(['spec']),
  }) as TranslatedRule;
}
