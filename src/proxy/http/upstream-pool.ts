import type net from 'node:net';

/**
 * Idle upstream connections by (source address, mark, destination): a connection whose last
 * response was keep-alive is kept a short while (below Node's 5 s server keep-alive default) for
 * the next downstream connection of the same source to the same destination.
 */
export class UpstreamPool {
  private readonly idle = new Map<string, net.Socket[]>();
  /** the pool's own listener on each idle socket (removed when taken) */
  private readonly drops = new WeakMap<net.Socket, () => void>();
  readonly maxPerKey: number;
  readonly idleMs: number;
  constructor(maxPerKey = 64, idleMs = 4000) {
    this.maxPerKey = maxPerKey;
    this.idleMs = idleMs;
  }

  /** `sock` carries no listener of its last user (it removed its own): only the pool's own are added and later removed. */
  put(key: string, sock: net.Socket): void {
    let list = this.idle.get(key);
    if (sock.destroyed || sock.readyState !== 'open' || (list && list.length >= this.maxPerKey)) {
      sock.destroy();
      return;
    }
    // made only for a socket it keeps: an empty list per key ever seen (source, mark, destination) grew without bound
    if (!list) this.idle.set(key, (list = []));
    const drop = () => {
      const l = this.idle.get(key);
      const i = l ? l.indexOf(sock) : -1;
      if (i >= 0) l!.splice(i, 1);
      if (l && l.length === 0) this.idle.delete(key);
      this.drops.delete(sock);
      sock.destroy();
    };
    sock.on('data', drop); // nothing is expected on an idle connection
    sock.on('end', drop);
    sock.on('error', drop);
    sock.on('close', drop);
    sock.setTimeout(this.idleMs, drop);
    this.drops.set(sock, drop);
    list.push(sock);
  }

  take(key: string): net.Socket | undefined {
    const list = this.idle.get(key);
    while (list && list.length) {
      const sock = list.pop()!;
      if (list.length === 0) this.idle.delete(key);
      const drop = this.drops.get(sock);
      this.drops.delete(sock);
      if (drop) for (const ev of ['data', 'end', 'error', 'close', 'timeout']) sock.off(ev, drop);
      sock.setTimeout(0);
      if (!sock.destroyed && sock.readyState === 'open' && !sock.readableEnded) return sock;
      sock.destroy();
    }
    return undefined;
  }

  get size(): number {
    let n = 0;
    for (const l of this.idle.values()) n += l.length;
    return n;
  }

  clear(): void {
    for (const l of this.idle.values()) for (const s of l) s.destroy();
    this.idle.clear();
  }
}
