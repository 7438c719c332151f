/**
 * The datapath's global configuration (mb_config, one entry): the policy revision established
 * connections are re-decided against, the event budget per sender, the overlay device.
 *
 * Packets read the entry while the agent changes it, so it is mapped into the agent
 * (BPF_F_MMAPABLE, bpf/lib/maps.h) and every field is written with one aligned store: a packet
 * reads either a field's old value or its new one, never a mix (bpf_map_update_elem's memcpy of
 * the whole value promises no such thing). A pinned map of an older definition that cannot be
 * mapped is written with updates, as before.
 */
import { BPF_F_MMAPABLE, mmapArray, type MappedArray } from '../../sys/bpf.ts';
import { DP_F_IPV6, DP_F_STRICT_INGRESS, DP_F_TUNNEL, decodeDpConfig, encodeDpConfig, encodeU32, eventBudget, type DpConfig, type MonitorAggregation } from './codec.ts';
import type { Loader } from './loader.ts';

const KEY = encodeU32(0);

/** struct dp_config's words (bpf/lib/maps.h; codec.ts checks the offsets against the header) */
const W32_REV = 0, W32_FLAGS = 1, W32_OVERLAY = 6, W32_MONITOR = 7;
const W64_EV_INTERVAL = 1, W64_EV_BURST = 2;

interface Mapped { m: MappedArray; u32: Uint32Array; u64: BigUint64Array }

export class ConfigMap {
  private readonly loader: Loader;
  /** policy revision last written to mb_config */
  private rev = 0;
  /** mb_config mapped (undefined: not mappable, written with updates) */
  private mapped: Mapped | undefined;

  constructor(loader: Loader) {
    this.loader = loader;
  }

  /** At load: keeps the pinned revision (connections decided before a restart stay current), sets the budget. */
  init(rate: { perSecond: number; burst: number }, o: { tunnel?: boolean; enableIPv6?: boolean; strictIngress?: boolean; monitorAggregation?: MonitorAggregation; monitorIntervalS?: number } = {}): void {
    const m = this.loader.map('mb_config');
    this.unmap();
    if (m.info.flags & BPF_F_MMAPABLE) {
      const mm = mmapArray(m);
      this.mapped = { m: mm, u32: new Uint32Array(mm.buf, 0, 8), u64: new BigUint64Array(mm.buf, 0, 4) };
    }
    const old = m.lookup(KEY);
    this.rev = old ? decodeDpConfig(old).policyRevision : 0;
    const c: DpConfig = {
      policyRevision: this.rev, flags: (o.tunnel ? DP_F_TUNNEL : 0) | (o.enableIPv6 ? DP_F_IPV6 : 0) | (o.strictIngress ? DP_F_STRICT_INGRESS : 0), ...eventBudget(rate.perSecond, rate.burst),
      ...(o.monitorAggregation ? { monitorAggregation: o.monitorAggregation } : {}), ...(o.monitorIntervalS ? { monitorIntervalS: o.monitorIntervalS } : {}),
    };
    const mp = this.mapped;
    if (!mp) {
      m.update(KEY, encodeDpConfig(c));
      return;
    }
    // field by field, each one store (the revision stays what it was)
    const b = encodeDpConfig(c);
    Atomics.store(mp.u64, W64_EV_INTERVAL, c.eventIntervalNs);
    Atomics.store(mp.u64, W64_EV_BURST, c.eventBurstNs);
    Atomics.store(mp.u32, W32_MONITOR, b.readUInt32LE(W32_MONITOR * 4));
    Atomics.store(mp.u32, W32_OVERLAY, 0);
    Atomics.store(mp.u32, W32_FLAGS, c.flags ?? 0);
  }

  /** Ends the mapping (the datapath stops; the pinned map keeps its values). */
  unmap(): void {
    this.mapped?.m.unmap();
    this.mapped = undefined;
  }

  /**
   * Every established connection's next forward packet is decided by policy again: called after
   * the maps hold a change of policy, ipcache or endpoints (never before: a packet that read the
   * old revision may have cached a verdict of the old maps).
   */
  bumpPolicyRevision(): void {
    const mp = this.mapped;
    if (mp) {
      this.rev = (Math.max(this.rev, Atomics.load(mp.u32, W32_REV)) + 1) >>> 0;
      Atomics.store(mp.u32, W32_REV, this.rev);
      return;
    }
    const m = this.loader.map('mb_config');
    const cur = m.lookup(KEY);
    const c = cur ? decodeDpConfig(cur) : { policyRevision: this.rev, ...eventBudget(0, 0) };
    this.rev = (Math.max(this.rev, c.policyRevision) + 1) >>> 0;
    m.update(KEY, encodeDpConfig({ ...c, policyRevision: this.rev }));
  }

  /**
   * Routing mode tunnel: the VXLAN device whose programs are attached (0: none). The endpoint
   * programs send pod traffic the node routes into it there directly (bpf/lib/overlay.h).
   */
  setOverlayIfindex(ifindex: number): void {
    const mp = this.mapped;
    if (mp) {
      Atomics.store(mp.u32, W32_OVERLAY, ifindex >>> 0);
      return;
    }
    const m = this.loader.map('mb_config');
    const cur = m.lookup(KEY);
    const c = cur ? decodeDpConfig(cur) : { policyRevision: this.rev, ...eventBudget(0, 0) };
    m.update(KEY, encodeDpConfig({ ...c, overlayIfindex: ifindex }));
  }

  /** Sets (or clears) one of mb_config's DP_F_* flags, keeping the rest of the entry. */
  setFlag(flag: number, on: boolean): void {
    const mp = this.mapped;
    if (mp) {
      const cur = Atomics.load(mp.u32, W32_FLAGS);
      const flags = (on ? cur | flag : cur & ~flag) >>> 0;
      if (flags !== cur) Atomics.store(mp.u32, W32_FLAGS, flags);
      return;
    }
    const m = this.loader.map('mb_config');
    const cur = m.lookup(KEY);
    const c = cur ? decodeDpConfig(cur) : { policyRevision: this.rev, ...eventBudget(0, 0) };
    const flags = on ? (c.flags ?? 0) | flag : (c.flags ?? 0) & ~flag;
    if (flags !== (c.flags ?? 0)) m.update(KEY, encodeDpConfig({ ...c, flags }));
  }

  policyRevision(): number {
    return this.rev;
  }

  /** Whether the fields are written through the mapping (one store each), not with updates. */
  isMapped(): boolean {
    return this.mapped !== undefined;
  }
}
