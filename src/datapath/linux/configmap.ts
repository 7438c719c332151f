/**
 * The datapath's global configuration (mb_config, one entry): the policy revision established
 * connections are re-decided against, the event budget per sender, the overlay device.
 */
import { DP_F_IPV6, DP_F_STRICT_INGRESS, DP_F_TUNNEL, decodeDpConfig, encodeDpConfig, encodeU32, eventBudget, type MonitorAggregation } from './codec.ts';
import type { Loader } from './loader.ts';

const KEY = encodeU32(0);

export class ConfigMap {
  private readonly loader: Loader;
  /** policy revision last written to mb_config */
  private rev = 0;

  constructor(loader: Loader) {
    this.loader = loader;
  }

  /** At load: keeps the pinned revision (connections decided before a restart stay current), sets the budget. */
  init(rate: { perSecond: number; burst: number }, o: { tunnel?: boolean; enableIPv6?: boolean; strictIngress?: boolean; monitorAggregation?: MonitorAggregation; monitorIntervalS?: number } = {}): void {
    const m = this.loader.map('mb_config');
    const old = m.lookup(KEY);
    this.rev = old ? decodeDpConfig(old).policyRevision : 0;
    m.update(KEY, encodeDpConfig({
      policyRevision: this.rev, flags: (o.tunnel ? DP_F_TUNNEL : 0) | (o.enableIPv6 ? DP_F_IPV6 : 0) | (o.strictIngress ? DP_F_STRICT_INGRESS : 0), ...eventBudget(rate.perSecond, rate.burst),
      ...(o.monitorAggregation ? { monitorAggregation: o.monitorAggregation } : {}), ...(o.monitorIntervalS ? { monitorIntervalS: o.monitorIntervalS } : {}),
    }));
  }

  /**
   * Every established connection's next forward packet is decided by policy again: called after
   * the maps hold a change of policy, ipcache or endpoints (never before: a packet that read the
   * old revision may have cached a verdict of the old maps).
   */
  bumpPolicyRevision(): void {
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
    const m = this.loader.map('mb_config');
    const cur = m.lookup(KEY);
    const c = cur ? decodeDpConfig(cur) : { policyRevision: this.rev, ...eventBudget(0, 0) };
    m.update(KEY, encodeDpConfig({ ...c, overlayIfindex: ifindex }));
  }

  /** Sets (or clears) one of mb_config's DP_F_* flags, keeping the rest of the entry. */
  setFlag(flag: number, on: boolean): void {
    const m = this.loader.map('mb_config');
    const cur = m.lookup(KEY);
    const c = cur ? decodeDpConfig(cur) : { policyRevision: this.rev, ...eventBudget(0, 0) };
    const flags = on ? (c.flags ?? 0) | flag : (c.flags ?? 0) & ~flag;
    if (flags !== (c.flags ?? 0)) m.update(KEY, encodeDpConfig({ ...c, flags }));
  }

  policyRevision(): number {
    return this.rev;
  }
}
