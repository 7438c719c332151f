/**
 * Remote pods by address, for 300,000 of them (10,000 nodes × 30). An IPv4 pod is a slot in
 * columns (typed arrays for the address and identity, arrays of shared strings for host, node and
 * namespace, its pod name) found through an open-addressing table keyed by the address as a
 * number: no Map entry, record object or address text per pod (a Map of records was ~150 bytes a
 * pod without V8's pointer compression, this ~80). Any other family (IPv6) is a record in a Map.
 * Records are made when asked (flow enrichment, tests), never kept.
 */
import { formatIPv4, parseIPv4 } from '../ipcache/prefix.ts';

export interface RemoteEndpoint {
  ip: string;
  identity: number;
  /** HostIP: the node the pod runs on */
  hostIp: string;
  node?: string;
  namespace?: string;
  pod?: string;
}

/** What `set` did: nothing, a change the datapath sees (identity, host), or another field only. */
export const UNCHANGED = 0, MOVED = 1, RELABELED = 2, ADDED = 3;

const hash = (a: number, mask: number) => (Math.imul(a, 0x9e3779b1) >>> 0) & mask;

export class RemoteStore {
  /** slot → address, identity */
  #addr = new Uint32Array(1024);
  #ident = new Uint32Array(1024);
  #host: string[] = [];
  #node: (string | undefined)[] = [];
  #ns: (string | undefined)[] = [];
  #pod: (string | undefined)[] = [];
  /** slots freed by deletes, reused first */
  #free: number[] = [];
  /** open addressing, linear probing: slot + 1, 0 empty; at most half full */
  #index = new Int32Array(2048);
  #count4 = 0;
  readonly #other = new Map<string, RemoteEndpoint>();

  get size(): number {
    return this.#count4 + this.#other.size;
  }

  #find(a: number): number {
    const idx = this.#index, mask = idx.length - 1;
    for (let i = hash(a, mask); ; i = (i + 1) & mask) {
      const s = idx[i]!;
      if (s === 0) return -1;
      if (this.#addr[s - 1] === a) return s - 1;
    }
  }

  #insertIndex(idx: Int32Array, slot: number): void {
    const mask = idx.length - 1;
    let i = hash(this.#addr[slot]!, mask);
    while (idx[i] !== 0) i = (i + 1) & mask;
    idx[i] = slot + 1;
  }

  #removeIndex(a: number): void {
    const idx = this.#index, mask = idx.length - 1;
    let i = hash(a, mask);
    while (this.#addr[idx[i]! - 1] !== a) i = (i + 1) & mask;
    idx[i] = 0;
    // backward shift: an entry after the hole that may not sit past it moves into it
    for (let j = (i + 1) & mask; idx[j] !== 0; j = (j + 1) & mask) {
      const k = hash(this.#addr[idx[j]! - 1]!, mask);
      const stays = i <= j ? i < k && k <= j : i < k || k <= j;
      if (!stays) { idx[i] = idx[j]!; idx[j] = 0; i = j; }
    }
  }

  #newSlot(): number {
    const f = this.#free.pop();
    if (f !== undefined) return f;
    const s = this.#host.length;
    if (s >= this.#addr.length) {
      const grow = (a: Uint32Array) => { const g = new Uint32Array(a.length * 2); g.set(a); return g; };
      this.#addr = grow(this.#addr);
      this.#ident = grow(this.#ident);
    }
    this.#host.push('');
    this.#node.push(undefined);
    this.#ns.push(undefined);
    this.#pod.push(undefined);
    return s;
  }

  has(ip: string): boolean {
    return this.at(ip);
  }

  get(ip: string): RemoteEndpoint | undefined {
    const a = parseIPv4(ip);
    if (a === undefined) return this.#other.get(ip);
    const s = this.#find(a);
    return s < 0 ? undefined : this.#record(s, ip);
  }

  #record(s: number, ip: string): RemoteEndpoint {
    const e: RemoteEndpoint = { ip, hostIp: this.#host[s]!, identity: this.#ident[s]! };
    const node = this.#node[s], ns = this.#ns[s], pod = this.#pod[s];
    if (node !== undefined) e.node = node;
    if (ns !== undefined) e.namespace = ns;
    if (pod !== undefined) e.pod = pod;
    return e;
  }

  /** peek's record, refilled per call */
  readonly #peeked: RemoteEndpoint = { ip: '', hostIp: '', identity: 0, node: undefined, namespace: undefined, pod: undefined };
  /**
   * get() without a record per call, for lookups per datapath event: the store's one record,
   * refilled, valid until the next peek (read it at once, never keep it). An IPv6 pod's is its own.
   */
  peek(ip: string): Readonly<RemoteEndpoint> | undefined {
    const a = parseIPv4(ip);
    if (a === undefined) return this.#other.get(ip);
    const s = this.#find(a);
    if (s < 0) return undefined;
    const e = this.#peeked;
    e.ip = ip;
    e.hostIp = this.#host[s]!;
    e.identity = this.#ident[s]!;
    e.node = this.#node[s];
    e.namespace = this.#ns[s];
    e.pod = this.#pod[s];
    return e;
  }

  /** what `at` found: the pod's host and identity */
  atHost = '';
  atIdentity = 0;
  /** Whether a pod has the address `ip` (then `atHost`, `atIdentity` are its), without a record. */
  at(ip: string): boolean {
    const a = parseIPv4(ip);
    if (a === undefined) {
      const e = this.#other.get(ip);
      if (e) { this.atHost = e.hostIp; this.atIdentity = e.identity; }
      return e !== undefined;
    }
    const s = this.#find(a);
    if (s >= 0) { this.atHost = this.#host[s]!; this.atIdentity = this.#ident[s]!; }
    return s >= 0;
  }

  /** the previous host of the pod `set` or `delete` changed last */
  prevHost: string | undefined;

  /** Adds or replaces the pod at `e.ip`; says what changed (`prevHost`: its host before). */
  set(e: RemoteEndpoint): number {
    const a = parseIPv4(e.ip);
    if (a === undefined) {
      const had = this.#other.get(e.ip);
      this.prevHost = had?.hostIp;
      this.#other.set(e.ip, e);
      if (!had) return ADDED;
      if (had.identity !== e.identity || had.hostIp !== e.hostIp) return MOVED;
      return had.node === e.node && had.namespace === e.namespace && had.pod === e.pod ? UNCHANGED : RELABELED;
    }
    let s = this.#find(a);
    let what = ADDED;
    this.prevHost = undefined;
    if (s >= 0) {
      this.prevHost = this.#host[s];
      what = this.#ident[s] !== e.identity || this.#host[s] !== e.hostIp ? MOVED
        : this.#node[s] === e.node && this.#ns[s] === e.namespace && this.#pod[s] === e.pod ? UNCHANGED : RELABELED;
      if (what === UNCHANGED) return what;
    } else {
      s = this.#newSlot();
      this.#addr[s] = a;
      if (2 * (this.#count4 + 1) > this.#index.length) {
        const idx = new Int32Array(this.#index.length * 2);
        for (const v of this.#index) if (v) this.#insertIndex(idx, v - 1);
        this.#index = idx;
      }
      this.#insertIndex(this.#index, s);
      this.#count4++;
    }
    this.#ident[s] = e.identity;
    this.#host[s] = e.hostIp;
    this.#node[s] = e.node;
    this.#ns[s] = e.namespace;
    this.#pod[s] = e.pod;
    return what;
  }

  /** Removes the pod at `ip`; whether there was one (`prevHost`: its host). */
  delete(ip: string): boolean {
    const a = parseIPv4(ip);
    if (a === undefined) {
      this.prevHost = this.#other.get(ip)?.hostIp;
      return this.#other.delete(ip);
    }
    const s = this.#find(a);
    this.prevHost = s < 0 ? undefined : this.#host[s];
    if (s < 0) return false;
    this.#removeIndex(a);
    this.#host[s] = '';
    this.#node[s] = this.#ns[s] = this.#pod[s] = undefined;
    this.#free.push(s);
    this.#count4--;
    return true;
  }

  /** every pod's address */
  *keys(): IterableIterator<string> {
    for (const v of this.#index) if (v) yield formatIPv4(this.#addr[v - 1]!);
    yield* this.#other.keys();
  }

  *values(): IterableIterator<RemoteEndpoint> {
    for (const v of this.#index) if (v) yield this.#record(v - 1, formatIPv4(this.#addr[v - 1]!));
    yield* this.#other.values();
  }
}
