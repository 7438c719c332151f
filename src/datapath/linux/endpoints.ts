/**
 * Local endpoints (Cilium's lxcmap): their config by host ifindex (mb_endpoints) and by endpoint
 * id (mb_ep_ids), and the pinned tcx links of from_container/to_container on their host veths.
 * The config's flags carry the endpoint's default-deny bits (from policy) and its audit bit.
 */
import { MembraneError } from '../../common/errors.ts';
import { attachTcx, detachPinnedLink, pinnedLinkInfo, BPF_TCX_EGRESS, BPF_TCX_INGRESS } from '../../sys/bpf.ts';
import type { DatapathEndpoint } from '../types.ts';
import { EP_F_AUDIT, EP_F_DENY_EGRESS, EP_F_DENY_INGRESS, decodeEpConfig, encodeEpConfig, encodeU32, setEpConfigFlags, type EpConfig } from './codec.ts';
import { linkPinPath, type Loader } from './loader.ts';

interface EndpointState { ep: DatapathEndpoint; flags: number }

/** What an upsert changed, for the composition to act on. */
export interface EndpointUpsert {
  /** the endpoint was not attached before (since start) */
  isNew: boolean;
  /** identity, audit mode or flags changed: connections to and from it are decided again */
  policyChanged: boolean;
}

export class EndpointMap {
  private readonly loader: Loader;
  private readonly pinRoot: string;
  private readonly endpoints = new Map<number, EndpointState>();
  /** ep_config flags (default deny, audit) per endpoint id, also for endpoints not yet upserted */
  private readonly flags = new Map<number, number>();

  constructor(loader: Loader, pinRoot: string) {
    this.loader = loader;
    this.pinRoot = pinRoot;
  }

  /**
   * At load: learns the endpoints the kernel has (after an agent restart) and calls `each` with
   * their ids; repairs the by-id mirror (a pinned state from before the map existed, or a crash
   * between the writes).
   */
  restore(each: (id: number) => void): void {
    for (const k of this.loader.map('mb_endpoints').keys()) {
      const v = this.loader.map('mb_endpoints').lookup(k);
      if (!v) continue;
      const c = decodeEpConfig(v);
      this.flags.set(c.epId, c.flags);
      each(c.epId);
      this.loader.map('mb_ep_ids').update(encodeU32(c.epId), v);
    }
  }

  /**
   * Writes the endpoint's config and attaches its programs. `beforeWrite(isNew)` runs before the
   * config reaches the kernel (its conntrack tables must exist first).
   */
  upsert(ep: DatapathEndpoint, beforeWrite: (isNew: boolean) => void): EndpointUpsert {
    const progFrom = this.loader.program('from_container');
    const progTo = this.loader.program('to_container');
    if (!(ep.id >= 1 && ep.id <= 65535)) throw new MembraneError('DATAPATH_BAD_ENDPOINT', `endpoint id ${ep.id} out of range 1..65535`);
    if (!(ep.ifindex > 0)) throw new MembraneError('DATAPATH_BAD_ENDPOINT', `endpoint ${ep.id}: ifindex ${ep.ifindex} is invalid`, { hint: 'the host-side veth must exist in the agent namespace' });
    const epMap = this.loader.map('mb_endpoints');
    const prev = this.endpoints.get(ep.id);
    if (prev && (prev.ep.ifindex !== ep.ifindex || prev.ep.ifname !== ep.ifname)) this.unplug(prev.ep);
    let known = this.flags.get(ep.id);
    if (known === undefined) {
      const old = epMap.lookup(encodeU32(ep.ifindex));
      known = old && decodeEpConfig(old).epId === ep.id ? decodeEpConfig(old).flags : 0;
    }
    // default-deny bits come from policy (setDefaultDeny); the audit bit from the endpoint
    const flags = (known & ~EP_F_AUDIT) | (ep.policyAuditMode ? EP_F_AUDIT : 0);
    this.flags.set(ep.id, flags);
    const cfg: EpConfig = { ifindex: ep.ifindex, epId: ep.id, flags, identity: ep.identity, ipv4: ep.ipv4, ...(ep.ipv6 ? { ipv6: ep.ipv6 } : {}), ...(ep.mac ? { mac: ep.mac } : {}) };
    beforeWrite(!prev);
    epMap.update(encodeU32(ep.ifindex), encodeEpConfig(cfg));
    this.loader.map('mb_ep_ids').update(encodeU32(ep.id), encodeEpConfig(cfg));
    attachTcx(progFrom.fd, ep.ifindex, BPF_TCX_INGRESS, linkPinPath(this.pinRoot, ep.ifname, 'ingress'));
    attachTcx(progTo.fd, ep.ifindex, BPF_TCX_EGRESS, linkPinPath(this.pinRoot, ep.ifname, 'egress'));
    this.endpoints.set(ep.id, { ep: { ...ep }, flags });
    // an identity change is a policy change for every connection to and from the endpoint
    // so is a change of audit mode: connections it let pass are decided again (turning audit off
    // drops the next packet of a connection only audit allowed)
    return { isNew: !prev, policyChanged: !prev || prev.ep.identity !== ep.identity || prev.flags !== flags || known !== flags };
  }

  /** Detaches the endpoint and removes its config (also one known only from the pinned maps). */
  remove(id: number): void {
    const st = this.endpoints.get(id);
    if (st) this.unplug(st.ep);
    else {
      // after a restart: find the endpoint's config by id
      const epMap = this.loader.map('mb_endpoints');
      for (const k of epMap.keys()) {
        const v = epMap.lookup(k);
        if (v && decodeEpConfig(v).epId === id) epMap.delete(k);
      }
      this.loader.map('mb_ep_ids').delete(encodeU32(id));
    }
    this.endpoints.delete(id);
    this.flags.delete(id);
  }

  /** Sets the endpoint's default-deny bits (its audit bit stays). */
  setDefaultDeny(id: number, dd: { ingress: boolean; egress: boolean }): void {
    const flags = ((this.flags.get(id) ?? 0) & EP_F_AUDIT) | (dd.ingress ? EP_F_DENY_INGRESS : 0) | (dd.egress ? EP_F_DENY_EGRESS : 0);
    this.flags.set(id, flags);
    const st = this.endpoints.get(id);
    const epMap = this.loader.map('mb_endpoints');
    if (st) {
      st.flags = flags;
      const k = encodeU32(st.ep.ifindex);
      const v = epMap.lookup(k);
      if (v) {
        setEpConfigFlags(v, flags);
        epMap.update(k, v);
        this.loader.map('mb_ep_ids').update(encodeU32(id), v);
      }
      return;
    }
    for (const k of epMap.keys()) {
      const v = epMap.lookup(k);
      if (v && decodeEpConfig(v).epId === id) {
        setEpConfigFlags(v, flags);
        epMap.update(k, v);
        this.loader.map('mb_ep_ids').update(encodeU32(id), v);
      }
    }
  }

  /** Endpoint ids this datapath knows: attached since start, or configured in the pinned maps. */
  knownIds(): number[] {
    const ids = new Set(this.endpoints.keys());
    const epMap = this.loader.map('mb_endpoints');
    for (const k of epMap.keys()) {
      const v = epMap.lookup(k);
      if (v) ids.add(decodeEpConfig(v).epId);
    }
    return [...ids].sort((a, b) => a - b);
  }

  /** Host veths of the attached endpoints, sorted. */
  ifnames(): string[] {
    return [...this.endpoints.values()].map((s) => s.ep.ifname).sort();
  }

  private unplug(ep: DatapathEndpoint): void {
    for (const d of ['ingress', 'egress'] as const) {
      const p = linkPinPath(this.pinRoot, ep.ifname, d);
      const li = pinnedLinkInfo(p);
      if (!li || li.ifindex === ep.ifindex || li.ifindex === 0) detachPinnedLink(p);
    }
    const epMap = this.loader.map('mb_endpoints');
    const v = epMap.lookup(encodeU32(ep.ifindex));
    if (v && decodeEpConfig(v).epId === ep.id) epMap.delete(encodeU32(ep.ifindex));
    const byId = this.loader.map('mb_ep_ids');
    const w = byId.lookup(encodeU32(ep.id));
    if (w && decodeEpConfig(w).ifindex === ep.ifindex) byId.delete(encodeU32(ep.id));
  }
}
