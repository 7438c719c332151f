/**
 * Network devices of the agent's namespace (world, underlay) with from_network at tcx ingress:
 * new connections from outside to local endpoints get their ingress policy (and L7 redirect) there.
 * Their role in mb_devices: only the underlay may carry other nodes' addresses. In routing mode
 * tunnel, the VXLAN device has from_overlay (ingress) and to_overlay (egress): bpf/lib/overlay.h.
 */
import { attachTcx, detachPinnedLink, ifNameToIndex, BPF_TCX_EGRESS, BPF_TCX_INGRESS } from '../../sys/bpf.ts';
import { DEV_F_UNDERLAY, encodeDevConfig, encodeU32 } from './codec.ts';
import { linkPinPath, type Loader } from './loader.ts';

export class NetworkDevices {
  private readonly loader: Loader;
  private readonly pinRoot: string;
  /** ifname -> ifindex */
  private readonly devices = new Map<string, number>();
  private overlay: string | undefined;

  constructor(loader: Loader, pinRoot: string) {
    this.loader = loader;
    this.pinRoot = pinRoot;
  }

  /** Forgets the devices (their pinned links stay). */
  reset(): void {
    this.devices.clear();
    this.overlay = undefined;
  }

  /** Idempotent; the device's ifindex, 0 when it does not exist. `underlay`: the device that links the nodes. */
  attach(ifname: string, o: { underlay?: boolean } = {}): number {
    const prog = this.loader.program('from_network');
    const ifindex = ifNameToIndex(ifname);
    if (!ifindex) return 0;
    this.loader.map('mb_devices').update(encodeU32(ifindex), encodeDevConfig(o.underlay ? DEV_F_UNDERLAY : 0));
    attachTcx(prog.fd, ifindex, BPF_TCX_INGRESS, linkPinPath(this.pinRoot, ifname, 'ingress'));
    this.devices.set(ifname, ifindex);
    return ifindex;
  }

  /** Routing mode tunnel: the programs of the VXLAN device. Idempotent; its ifindex, 0 when it does not exist. */
  attachOverlay(ifname: string): number {
    const ifindex = ifNameToIndex(ifname);
    if (!ifindex) return 0;
    attachTcx(this.loader.program('from_overlay').fd, ifindex, BPF_TCX_INGRESS, linkPinPath(this.pinRoot, ifname, 'ingress'));
    attachTcx(this.loader.program('to_overlay').fd, ifindex, BPF_TCX_EGRESS, linkPinPath(this.pinRoot, ifname, 'egress'));
    this.overlay = ifname;
    return ifindex;
  }

  /** The VXLAN device with the overlay programs, if any. */
  overlayDevice(): string | undefined {
    return this.overlay;
  }

  detach(ifname: string): void {
    detachPinnedLink(linkPinPath(this.pinRoot, ifname, 'ingress'));
    this.devices.delete(ifname);
  }

  /** Attached device names, sorted. */
  names(): string[] {
    return [...this.devices.keys()].sort();
  }
}
