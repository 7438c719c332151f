/**
 * DNS caches for FQDN policy (spec policy.md §6.2–6.3): what each endpoint learned from DNS
 * answers the proxy saw, and the node-wide union of it.
 *
 * A (name, IP) pair is *valid* for an endpoint while
 *   - a live entry holds it: set by an answer, expiring at lookup + max(TTL, tofqdns-min-ttl), or
 *   - a zombie holds it: the entry expired (or was evicted by the per-name IP limit) while a
 *     connection still used the IP (`isInUse`, answered later by datapath conntrack), or within
 *     `idleGracePeriodMs` of the last time one did.
 * Expired entries stay valid until the next `gc()`: GC runs on a coarse timer (the name manager
 * drives it), so TTLs are honoured to within one GC interval, never early. GC never removes an
 * IP that is in use: a live connection is never cut by TTL expiry.
 *
 * Every mutation returns the pairs that became valid / invalid, at the endpoint level and (for
 * NodeDNSCache) at the node level, where a pair is valid while any endpoint holds it. The name
 * manager turns node-level changes into ipcache updates.
 */

export interface DNSCacheOptions {
  /** `tofqdns-min-ttl`, seconds: lower bound applied to answer TTLs. Default 0 (honour TTL). */
  minTTL?: number;
  /** `tofqdns-endpoint-max-ip-per-hostname`: IPs kept per name per endpoint. Default 50. */
  maxIPsPerName?: number;
  /** `tofqdns-idle-connection-grace-period`, ms: an expired IP stays this long after last use. Default 0. */
  idleGracePeriodMs?: number;
  /** `tofqdns-max-deferred-connection-deletes`: zombies kept per endpoint. Default 10000. */
  maxZombies?: number;
  /** Clock in ms (tests inject one). Default Date.now. */
  now?: () => number;
  /**
   * Whether a connection from the endpoint to `ip` is tracked (datapath conntrack). Default: never.
   * Called only by `gc()` and by eviction, never per query.
   */
  isInUse?: (ip: string, endpointId: number) => boolean;
}

/** A (name, IP) pair; names are normalized (lower case, trailing dot). */
export interface NameIP {
  name: string;
  ip: string;
}

export interface CacheChange {
  /** pairs that became valid */
  added: NameIP[];
  /** pairs that stopped being valid */
  removed: NameIP[];
}

interface Entry {
  /** ms; the pair is live until GC sees now >= expires */
  expires: number;
  /** ms of the last answer that returned this IP for this name (eviction order) */
  seen: number;
  ttl: number;
}

interface Zombie {
  names: Set<string>;
  /** ms of the last time the IP was seen in use, or when it was zombified */
  lastInUse: number;
  inUse: boolean;
}

export interface EndpointCacheStats {
  names: number;
  entries: number;
  zombies: number;
  /** zombies above maxZombies kept because their IP is still in use */
  zombiesOverLimit: number;
}

const DEFAULTS = { minTTL: 0, maxIPsPerName: 50, idleGracePeriodMs: 0, maxZombies: 10000 };

/** What one endpoint learned from DNS. */
export class EndpointDNSCache {
  readonly endpointId: number;
  readonly #minTTL: number;
  readonly #maxIPs: number;
  readonly #grace: number;
  readonly #maxZombies: number;
  readonly #now: () => number;
  readonly #isInUse: (ip: string, endpointId: number) => boolean;
  /** name → ip → entry */
  readonly #names = new Map<string, Map<string, Entry>>();
  /** ip → names with a live entry */
  readonly #byIP = new Map<string, Set<string>>();
  readonly #zombies = new Map<string, Zombie>();
  #zombiesOverLimit = 0;

  constructor(endpointId: number, opts: DNSCacheOptions = {}) {
    this.endpointId = endpointId;
    this.#minTTL = Math.max(0, opts.minTTL ?? DEFAULTS.minTTL);
    this.#maxIPs = Math.max(1, opts.maxIPsPerName ?? DEFAULTS.maxIPsPerName);
    this.#grace = Math.max(0, opts.idleGracePeriodMs ?? DEFAULTS.idleGracePeriodMs);
    this.#maxZombies = Math.max(0, opts.maxZombies ?? DEFAULTS.maxZombies);
    this.#now = opts.now ?? Date.now;
    this.#isInUse = opts.isInUse ?? (() => false);
  }

  /** The effective TTL (seconds) of an answer TTL. */
  effectiveTTL(ttl: number): number {
    return Math.max(ttl, this.#minTTL);
  }

  /**
   * Records an answer: `ips` for `name` with `ttl` seconds. Returns the pairs that became valid
   * (new IPs) and those that stopped (evicted over the per-name limit and not in use).
   */
  update(name: string, ips: readonly string[], ttl: number, now = this.#now()): CacheChange {
    const change: CacheChange = { added: [], removed: [] };
    if (ips.length === 0) return change;
    const expires = now + this.effectiveTTL(Math.max(0, ttl)) * 1000;
    let m = this.#names.get(name);
    if (!m) {
      m = new Map();
      this.#names.set(name, m);
    }
    for (const ip of ips) {
      const e = m.get(ip);
      if (e) {
        // A later answer can only extend validity: a short TTL from one resolver path must not
        // cut an IP another answer made valid for longer.
        if (expires > e.expires) e.expires = expires;
        e.seen = now;
        e.ttl = ttl;
        continue;
      }
      m.set(ip, { expires, seen: now, ttl });
      let names = this.#byIP.get(ip);
      if (!names) {
        names = new Set();
        this.#byIP.set(ip, names);
      }
      names.add(name);
      if (!this.#unzombify(ip, name)) change.added.push({ name, ip });
    }
    if (m.size > this.#maxIPs) this.#evictOldest(name, m, now, change);
    return change;
  }

  /** Oldest-seen IPs beyond the per-name limit leave; those still in use become zombies. */
  #evictOldest(name: string, m: Map<string, Entry>, now: number, change: CacheChange): void {
    const byAge = [...m.entries()].sort((a, b) => a[1].seen - b[1].seen || (a[0] < b[0] ? -1 : 1));
    let excess = m.size - this.#maxIPs;
    for (const [ip] of byAge) {
      if (excess <= 0) break;
      excess--;
      this.#dropLive(name, ip, m);
      if (this.#isInUse(ip, this.endpointId)) this.#zombify(ip, name, now, true);
      else {
        // An IP added by this same answer and evicted at once never became valid.
        const i = change.added.findIndex((p) => p.ip === ip);
        if (i >= 0) change.added.splice(i, 1);
        else change.removed.push({ name, ip });
      }
    }
  }

  #dropLive(name: string, ip: string, m: Map<string, Entry>): void {
    m.delete(ip);
    if (m.size === 0) this.#names.delete(name);
    const names = this.#byIP.get(ip);
    if (names) {
      names.delete(name);
      if (names.size === 0) this.#byIP.delete(ip);
    }
  }

  #zombify(ip: string, name: string, lastInUse: number, inUse: boolean): void {
    let z = this.#zombies.get(ip);
    if (!z) {
      z = { names: new Set(), lastInUse, inUse };
      this.#zombies.set(ip, z);
    } else {
      if (lastInUse > z.lastInUse) z.lastInUse = lastInUse;
      z.inUse ||= inUse;
    }
    z.names.add(name);
  }

  /** A fresh answer revives a zombie pair; true when the pair was a zombie (already valid). */
  #unzombify(ip: string, name: string): boolean {
    const z = this.#zombies.get(ip);
    if (!z || !z.names.delete(name)) return false;
    if (z.names.size === 0) this.#zombies.delete(ip);
    return true;
  }

  /**
   * Expires entries (now >= expiry) and deletes zombies no longer in use (after the grace
   * period). Never removes an IP that `isInUse` reports in use.
   */
  gc(now = this.#now()): CacheChange {
    const change: CacheChange = { added: [], removed: [] };
    const inUseMemo = new Map<string, boolean>();
    const inUse = (ip: string): boolean => {
      let v = inUseMemo.get(ip);
      if (v === undefined) {
        v = this.#isInUse(ip, this.endpointId);
        inUseMemo.set(ip, v);
      }
      return v;
    };
    for (const [name, m] of [...this.#names]) {
      for (const [ip, e] of [...m]) {
        if (now < e.expires) continue;
        this.#dropLive(name, ip, m);
        if (inUse(ip)) this.#zombify(ip, name, now, true);
        else if (this.#grace > 0 && now < e.expires + this.#grace) this.#zombify(ip, name, e.expires, false);
        else change.removed.push({ name, ip });
      }
    }
    for (const [ip, z] of [...this.#zombies]) {
      if (inUse(ip)) {
        z.inUse = true;
        z.lastInUse = now;
        continue;
      }
      z.inUse = false;
      if (now >= z.lastInUse + this.#grace) this.#deleteZombie(ip, z, change);
    }
    // Over the cap: drop idle zombies, least recently used first. In-use ones stay (counted).
    this.#zombiesOverLimit = 0;
    if (this.#zombies.size > this.#maxZombies) {
      const idle = [...this.#zombies].filter(([, z]) => !z.inUse).sort((a, b) => a[1].lastInUse - b[1].lastInUse);
      for (const [ip, z] of idle) {
        if (this.#zombies.size <= this.#maxZombies) break;
        this.#deleteZombie(ip, z, change);
      }
      this.#zombiesOverLimit = Math.max(0, this.#zombies.size - this.#maxZombies);
    }
    return change;
  }

  #deleteZombie(ip: string, z: Zombie, change: CacheChange): void {
    this.#zombies.delete(ip);
    for (const name of z.names) change.removed.push({ name, ip });
  }

  /** Drops everything (endpoint deleted): every valid pair is returned as removed. */
  clear(): CacheChange {
    const change: CacheChange = { added: [], removed: [...this.pairs()] };
    this.#names.clear();
    this.#byIP.clear();
    this.#zombies.clear();
    return change;
  }

  /**
   * Expires every live entry of names for which `match(name)` is true now (`cilium fqdn cache
   * clean`): they go through the zombie rules at once, so in-use IPs stay.
   */
  forceExpire(match: (name: string) => boolean, now = this.#now()): CacheChange {
    for (const [name, m] of this.#names) if (match(name)) for (const e of m.values()) e.expires = Math.min(e.expires, now);
    return this.gc(now);
  }

  /** Live (unexpired) IPs of a name. */
  lookup(name: string, now = this.#now()): string[] {
    const m = this.#names.get(name);
    if (!m) return [];
    const out: string[] = [];
    for (const [ip, e] of m) if (now < e.expires) out.push(ip);
    return out;
  }

  /** Names for which `ip` is valid (live or zombie): what Hubble shows as destination_names. */
  namesForIP(ip: string): string[] {
    const out = new Set(this.#byIP.get(ip) ?? []);
    for (const n of this.#zombies.get(ip)?.names ?? []) out.add(n);
    return [...out];
  }

  /** Every valid pair. */
  *pairs(): Generator<NameIP> {
    for (const [name, m] of this.#names) for (const ip of m.keys()) yield { name, ip };
    for (const [ip, z] of this.#zombies) for (const name of z.names) if (!this.#names.get(name)?.has(ip)) yield { name, ip };
  }

  /** Entries for dumps (`membrane fqdn cache list`). */
  entries(now = this.#now()): { name: string; ip: string; ttl: number; expiresInMs: number; zombie: boolean; inUse?: boolean }[] {
    const out: { name: string; ip: string; ttl: number; expiresInMs: number; zombie: boolean; inUse?: boolean }[] = [];
    for (const [name, m] of this.#names) for (const [ip, e] of m) out.push({ name, ip, ttl: e.ttl, expiresInMs: e.expires - now, zombie: false });
    for (const [ip, z] of this.#zombies) for (const name of z.names) out.push({ name, ip, ttl: 0, expiresInMs: 0, zombie: true, inUse: z.inUse });
    return out;
  }

  stats(): EndpointCacheStats {
    let entries = 0;
    for (const m of this.#names.values()) entries += m.size;
    return { names: this.#names.size, entries, zombies: this.#zombies.size, zombiesOverLimit: this.#zombiesOverLimit };
  }
}

/**
 * The node-wide view: one EndpointDNSCache per endpoint, and the union of their valid pairs
 * with reference counts. A pair is reported added when the first endpoint makes it valid and
 * removed when the last one drops it: a name's IPs are shared by all endpoints on the node.
 */
export class NodeDNSCache {
  readonly #opts: DNSCacheOptions;
  readonly #endpoints = new Map<number, EndpointDNSCache>();
  /** name → ip → number of endpoints holding the pair */
  readonly #byName = new Map<string, Map<string, number>>();
  /** ip → name → number of endpoints holding the pair */
  readonly #byIP = new Map<string, Map<string, number>>();

  constructor(opts: DNSCacheOptions = {}) {
    this.#opts = opts;
  }

  endpoint(id: number): EndpointDNSCache {
    let c = this.#endpoints.get(id);
    if (!c) {
      c = new EndpointDNSCache(id, this.#opts);
      this.#endpoints.set(id, c);
    }
    return c;
  }

  endpoints(): number[] {
    return [...this.#endpoints.keys()];
  }

  /** Records an answer seen by endpoint `endpointId`; returns node-level changes. */
  update(endpointId: number, name: string, ips: readonly string[], ttl: number, now?: number): CacheChange {
    return this.#apply(this.endpoint(endpointId).update(name, ips, ttl, now));
  }

  /** GC of every endpoint; node-level changes. */
  gc(now?: number): CacheChange {
    const out: CacheChange = { added: [], removed: [] };
    for (const c of this.#endpoints.values()) {
      const ch = this.#apply(c.gc(now));
      out.added.push(...ch.added);
      out.removed.push(...ch.removed);
    }
    return out;
  }

  /** An endpoint went away: its pairs are released. */
  removeEndpoint(id: number): CacheChange {
    const c = this.#endpoints.get(id);
    if (!c) return { added: [], removed: [] };
    this.#endpoints.delete(id);
    return this.#apply(c.clear());
  }

  forceExpire(match: (name: string) => boolean, now?: number): CacheChange {
    const out: CacheChange = { added: [], removed: [] };
    for (const c of this.#endpoints.values()) {
      const ch = this.#apply(c.forceExpire(match, now));
      out.removed.push(...ch.removed);
    }
    return out;
  }

  #apply(ch: CacheChange): CacheChange {
    const out: CacheChange = { added: [], removed: [] };
    for (const p of ch.added) if (this.#ref(p, 1) === 1) out.added.push(p);
    for (const p of ch.removed) if (this.#ref(p, -1) === 0) out.removed.push(p);
    return out;
  }

  #ref(p: NameIP, d: number): number {
    let ips = this.#byName.get(p.name);
    if (!ips) {
      if (d < 0) return -1;
      ips = new Map();
      this.#byName.set(p.name, ips);
    }
    const n = (ips.get(p.ip) ?? 0) + d;
    let names = this.#byIP.get(p.ip);
    if (!names) {
      names = new Map();
      this.#byIP.set(p.ip, names);
    }
    if (n <= 0) {
      ips.delete(p.ip);
      if (ips.size === 0) this.#byName.delete(p.name);
      names.delete(p.name);
      if (names.size === 0) this.#byIP.delete(p.ip);
      return 0;
    }
    ips.set(p.ip, n);
    names.set(p.name, n);
    return n;
  }

  /** IPs valid for a name on this node. */
  ipsForName(name: string): string[] {
    return [...(this.#byName.get(name)?.keys() ?? [])];
  }

  /** Names an IP is valid for on this node. */
  namesForIP(ip: string): string[] {
    return [...(this.#byIP.get(ip)?.keys() ?? [])];
  }

  hasIP(ip: string): boolean {
    return this.#byIP.has(ip);
  }

  names(): IterableIterator<string> {
    return this.#byName.keys();
  }

  stats(): { endpoints: number; names: number; ips: number; zombies: number; zombiesOverLimit: number } {
    let zombies = 0;
    let over = 0;
    for (const c of this.#endpoints.values()) {
      const s = c.stats();
      zombies += s.zombies;
      over += s.zombiesOverLimit;
    }
    return { endpoints: this.#endpoints.size, names: this.#byName.size, ips: this.#byIP.size, zombies, zombiesOverLimit: over };
  }
}
