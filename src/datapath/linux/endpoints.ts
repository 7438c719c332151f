/**
 * Local endpoints (Cilium's lxcmap): their config by host ifindex (mb_endpoints) and by endpoint
 * id (mb_ep_ids), and the pinned tcx links of from_container/to_container on their host veths.
 * The config's flags carry the endpoint's default-deny bits (from policy) and its audit bit.
 *
 * The datapath delivers into a local endpoint by its id alone (bpf/endpoint.bpf.c peer_dest: one
 * lookup in mb_ep_ids, then bpf_redirect_peer to the veth it names), so every writer here keeps:
 * an mb_ep_ids entry names a veth whose mb_endpoints entry is the same endpoint's. An id's entry is
 * written after its veth's and deleted before it, and a veth whose ifindex another endpoint takes
 * over loses the old endpoint's id entry before its own entry changes hands; at load, id entries
 * that break it (a crash between writes) are removed. Once another endpoint holds a veth, nothing of
 * the old endpoint is written through it (flags) nor taken from it (its programs, on removal).
 */
import { MembraneError } from '../../common/errors.ts';
import { attachTcx, detachPinnedLink, pinnedLinkInfo, pinnedLinks, progInfoById, BPF_TCX_EGRESS, BPF_TCX_INGRESS } from '../../sys/bpf.ts';
import type { DatapathEndpoint } from '../types.ts';
import { EP_F_AUDIT, EP_F_DENY_EGRESS, EP_F_DENY_INGRESS, EP_F_NO_POLICY_EGRESS, EP_F_NO_POLICY_INGRESS, decodeEpConfig, encodeEpConfig, encodeU32, setEpConfigFlags, type EpConfig } from './codec.ts';
import { linkPinDir, linkPinPath, type Loader } from './loader.ts';

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
    const epMap = this.loader.map('mb_endpoints');
    const byId = this.loader.map('mb_ep_ids');
    // id entries whose veth's entry is not theirs first (the datapath would deliver by them)
    for (const k of byId.keys()) {
      const w = byId.lookup(k);
      if (!w || !this.vethIs(decodeEpConfig(w).ifindex, k.readUInt32LE(0))) byId.delete(k);
    }
    for (const k of epMap.keys()) {
      const v = epMap.lookup(k);
      if (!v) continue;
      const c = decodeEpConfig(v);
      this.flags.set(c.epId, c.flags);
      each(c.epId);
      byId.update(encodeU32(c.epId), v);
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
    // the veth's entry changes hands: the endpoint it named loses its id entry first
    const holder = epMap.lookup(encodeU32(ep.ifindex));
    if (holder && decodeEpConfig(holder).epId !== ep.id) this.dropIdEntry(decodeEpConfig(holder).epId, ep.ifindex);
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
      // after a restart: the endpoint is known from the maps alone, which name its veth by
      // ifindex; its programs hang on links pinned by the veth's name, found by the device they
      // are on (left pinned, they would stay on the veth, and their pins outlive it)
      const epMap = this.loader.map('mb_endpoints');
      const veths = [...epMap.keys()].filter((k) => {
        const v = epMap.lookup(k);
        return v !== null && decodeEpConfig(v).epId === id;
      });
      for (const k of veths) this.detachLinksOn(k.readUInt32LE(0));
      // the id entry before the veth's (the datapath delivers by the id entry alone)
      this.loader.map('mb_ep_ids').delete(encodeU32(id));
      for (const k of veths) epMap.delete(k);
    }
    this.endpoints.delete(id);
    this.flags.delete(id);
  }

  /** Sets the endpoint's default-deny bits (its other bits stay). */
  setDefaultDeny(id: number, dd: { ingress: boolean; egress: boolean }): void {
    this.setFlags(id, EP_F_DENY_INGRESS | EP_F_DENY_EGRESS, (dd.ingress ? EP_F_DENY_INGRESS : 0) | (dd.egress ? EP_F_DENY_EGRESS : 0));
  }

  /**
   * Sets the endpoint's "no policy entry" bits: `holds` says in which directions mb_policy may hold
   * entries of it. The datapath decides a direction whose bit is set without looking, so the
   * caller clears a bit (holds true) before the direction's first entry is written and sets it
   * (holds false) only once its last is gone. Writes only a change.
   */
  setPolicyHeld(id: number, holds: { ingress: boolean; egress: boolean }): void {
    const bits = (holds.ingress ? 0 : EP_F_NO_POLICY_INGRESS) | (holds.egress ? 0 : EP_F_NO_POLICY_EGRESS);
    const cur = this.flags.get(id);
    if (cur !== undefined && (cur & (EP_F_NO_POLICY_INGRESS | EP_F_NO_POLICY_EGRESS)) === bits) return;
    this.setFlags(id, EP_F_NO_POLICY_INGRESS | EP_F_NO_POLICY_EGRESS, bits);
  }

  /** Replaces the bits `mask` of the endpoint's config flags with `bits`, in both maps. */
  private setFlags(id: number, mask: number, bits: number): void {
    const flags = ((this.flags.get(id) ?? 0) & ~mask) | bits;
    this.flags.set(id, flags);
    const st = this.endpoints.get(id);
    const epMap = this.loader.map('mb_endpoints');
    if (st) {
      st.flags = flags;
      const k = encodeU32(st.ep.ifindex);
      const v = epMap.lookup(k);
      // the veth's entry only while it is this endpoint's: another endpoint that took the veth over
      // keeps its own bits, and this id gets no entry naming it (upsert writes both again)
      if (v && decodeEpConfig(v).epId === id) {
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
    const epMap = this.loader.map('mb_endpoints');
    const v = epMap.lookup(encodeU32(ep.ifindex));
    const holder = v ? decodeEpConfig(v).epId : undefined;
    // the veth's programs (pinned by the veth's name) only while the veth is not another
    // endpoint's: one that took it over enforces with them
    if (holder === undefined || holder === ep.id) {
      for (const d of ['ingress', 'egress'] as const) {
        const p = linkPinPath(this.pinRoot, ep.ifname, d);
        const li = pinnedLinkInfo(p);
        if (!li || li.ifindex === ep.ifindex || li.ifindex === 0) detachPinnedLink(p);
      }
    }
    // the id entry before the veth's (the datapath delivers by the id entry alone)
    this.dropIdEntry(ep.id, ep.ifindex);
    if (holder === ep.id) epMap.delete(encodeU32(ep.ifindex));
  }

  /**
   * Unpins (detaches) the endpoint programs' tcx links on veth `ifindex`, whatever name they are
   * pinned by, and those whose device is gone (defunct: attached to nothing, pinned for nothing).
   * `ifindex` comes from a stale entry: the veth it named may be gone and the index taken by
   * another device since, so a live link there is the veth's only if it runs an endpoint program
   * (from_container, to_container, of whichever load: an agent's restart leaves the previous one's
   * attached). Another endpoint's veth on the index cannot be meant: its upsert, the only thing
   * that attaches endpoint programs, rewrote the index's entry, which names this endpoint. A
   * network device's programs on a reused index (from_network, the overlay's) stay.
   */
  private detachLinksOn(ifindex: number): void {
    for (const { path, info } of pinnedLinks(linkPinDir(this.pinRoot))) {
      if (info.attachType !== BPF_TCX_INGRESS && info.attachType !== BPF_TCX_EGRESS) continue;
      if (info.ifindex === 0) { detachPinnedLink(path); continue; }
      if (info.ifindex !== ifindex) continue;
      const prog = progInfoById(info.progId)?.name;
      if (prog === (info.attachType === BPF_TCX_INGRESS ? 'from_container' : 'to_container')) detachPinnedLink(path);
    }
  }

  /** Deletes endpoint `id`'s mb_ep_ids entry if it names veth `ifindex`. */
  private dropIdEntry(id: number, ifindex: number): void {
    const byId = this.loader.map('mb_ep_ids');
    const w = byId.lookup(encodeU32(id));
    if (w && decodeEpConfig(w).ifindex === ifindex) byId.delete(encodeU32(id));
  }

  /** The mb_endpoints entry of veth `ifindex` is endpoint `id`'s. */
  private vethIs(ifindex: number, id: number): boolean {
    const v = this.loader.map('mb_endpoints').lookup(encodeU32(ifindex));
    return v !== null && decodeEpConfig(v).epId === id;
  }
}
