// The setup the datapath integration tests share: a node namespace with pods (and optionally an
// outside host), a datapath driver inside the node namespace with every pod as an endpoint and
// in the ipcache, helpers over its events, and the teardown that removes all of it (also after a
// half-finished setup). Pins live under /sys/fs/bpf/mdp-<tag>.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createTopo, createWorld, killProc, sh, spawnInNs, waitLine, type Pod, type Topo, type World } from './topo.ts';
import { Driver } from './rpc.ts';
import { destroy } from '../../../../src/datapath/linux/index.ts';
import type { DatapathEvent } from '../../../../src/datapath/types.ts';

export interface DatapathNodeOptions {
  /** one letter per test file, so parallel files never share names */
  prefix: string;
  pods: number;
  /** pod subnet 10.250.<subnet>.0/24 (createTopo) */
  subnet?: number;
  /** identity of pod p is identityBase + p.id */
  identityBase: number;
  /** an outside host with this address, from_network attached to the node's device towards it */
  worldIp?: string;
  /** LinuxDatapathOptions of the driver (JSON-serializable ones) */
  driverOptions?: object;
  /** dual stack: pods (and the world, with worldIp6) get IPv6 addresses; the endpoints and the
   * ipcache carry them. The driver's enableIPv6 is driverOptions' business. */
  ipv6?: boolean;
  worldIp6?: string;
}

/** One line per event, for assertion messages. */
export function showEvents(evs: DatapathEvent[]): string {
  return JSON.stringify(evs.slice(-30).map((x) => `${x.type}/${x.subType} ep${x.endpointId} ${x.direction} ${x.srcIp}:${x.srcPort}->${x.dstIp}:${x.dstPort} p${x.proto} ct${x.ctReason} v${x.verdict}`));
}

export class DatapathNode {
  readonly tag: string;
  readonly pinRoot: string;
  readonly procs: ChildProcess[] = [];
  private readonly opts: DatapathNodeOptions;
  private readonly drivers: Driver[] = [];
  private topoValue: Topo | null = null;
  private worldValue: World | null = null;

  constructor(opts: DatapathNodeOptions) {
    this.opts = opts;
    this.tag = `${opts.prefix}${process.pid % 100000}`;
    this.pinRoot = `/sys/fs/bpf/mdp-${this.tag}`;
  }

  get topo(): Topo {
    assert.ok(this.topoValue, 'node not up');
    return this.topoValue;
  }

  get world(): World {
    assert.ok(this.worldValue, 'node has no world');
    return this.worldValue;
  }

  /** The newest driver (up() starts the first; driver() opens the next, as after an agent restart). */
  get d(): Driver {
    const d = this.drivers.at(-1);
    assert.ok(d, 'node not up');
    return d;
  }

  idOf(p: Pod): number {
    return this.opts.identityBase + p.id;
  }

  async up(): Promise<void> {
    this.topoValue = createTopo(this.tag, this.opts.pods, this.opts.subnet, this.opts.ipv6 ?? false);
    if (this.opts.worldIp) this.worldValue = createWorld(this.topoValue, this.opts.worldIp, this.opts.worldIp6);
    const d = this.driver(this.opts.driverOptions);
    await d.call('start');
    for (const p of this.topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: this.idOf(p), ipv4: p.ip, ...(p.ip6 ? { ipv6: p.ip6 } : {}), ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
    await d.call('upsertIPCache', [
      ...this.topo.pods.map((p) => ({ prefix: `${p.ip}/32`, identity: this.idOf(p), endpointId: p.id })),
      ...this.topo.pods.filter((p) => p.ip6).map((p) => ({ prefix: `${p.ip6}/128`, identity: this.idOf(p), endpointId: p.id })),
      { prefix: '10.250.0.1/32', identity: 1 },
    ]);
    if (this.worldValue) assert.equal(await d.call('attachNetworkDevice', this.worldValue.ifname), true);
  }

  /** Another driver process on the same pins (an agent restart); down() closes it. */
  driver(options?: object): Driver {
    const d = new Driver(this.topo.nodeNs, this.pinRoot, options);
    this.drivers.push(d);
    return d;
  }

  /** Runs a net-tool command in `ns`; down() kills it. */
  spawn(ns: string, args: string[]): ChildProcess {
    const cp = spawnInNs(ns, args);
    this.procs.push(cp);
    return cp;
  }

  /** Starts `serve` in each namespace (tcp ports, udp ports) and waits until all are ready. */
  async serve(...servers: [ns: string, tcp: string, udp: string][]): Promise<void> {
    await Promise.all(servers.map(([ns, tcp, udp]) => waitLine(this.spawn(ns, ['serve', tcp, udp]), /ready/, 30_000)));
  }

  /** Every pod back to no policy and no default deny; pending events dropped. */
  async reset(): Promise<void> {
    for (const p of this.topo.pods) await this.d.call('applyFull', p.id, [], { ingress: false, egress: false });
    await this.d.call('events', 0);
  }

  events(waitMs = 400): Promise<DatapathEvent[]> {
    return this.d.call('events', waitMs);
  }

  /** The first event `pred` accepts; fails with the events seen. */
  find(evs: DatapathEvent[], pred: (e: DatapathEvent) => boolean, what: string): DatapathEvent {
    const e = evs.find(pred);
    assert.ok(e, `expected event: ${what}; got ${showEvents(evs)}`);
    return e;
  }

  async down(): Promise<void> {
    for (const p of this.procs) killProc(p);
    for (const x of this.drivers) await x.close().catch(() => {});
    destroy(this.pinRoot);
    this.worldValue?.destroy();
    this.topoValue?.destroy();
    sh('rm', ['-rf', this.pinRoot], { allowFail: true });
  }
}
