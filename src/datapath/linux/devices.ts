/**
 * Network devices of the agent's namespace (world, underlay) with from_network at tcx ingress:
 * new connections from outside to local endpoints get their ingress policy (and L7 redirect) there.
 */
import { attachTcx, detachPinnedLink, ifNameToIndex, BPF_TCX_INGRESS } from '../../sys/bpf.ts';
import { linkPinPath, type Loader } from './loader.ts';

export class NetworkDevices {
  private readonly loader: Loader;
  private readonly pinRoot: string;
  /** ifname -> ifindex */
  private readonly devices = new Map<string, number>();

  constructor(loader: Loader, pinRoot: string) {
    this.loader = loader;
    this.pinRoot = pinRoot;
  }

  /** Forgets the devices (their pinned links stay). */
  reset(): void {
    this.devices.clear();
  }

  /** Idempotent; the device's ifindex, 0 when it does not exist. */
  attach(ifname: string): number {
    const prog = this.loader.program('from_network');
    const ifindex = ifNameToIndex(ifname);
    if (!ifindex) return 0;
    attachTcx(prog.fd, ifindex, BPF_TCX_INGRESS, linkPinPath(this.pinRoot, ifname, 'ingress'));
    this.devices.set(ifname, ifindex);
    return ifindex;
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
