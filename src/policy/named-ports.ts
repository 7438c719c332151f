/**
 * Named container ports: what a pod names its ports (podNamedPorts), and the index by identity
 * that resolves egress named ports for the destination's identity (NamedPortIndex, the engine's
 * NamedPortProvider).
 */
import type { Pod } from '../api/types.ts';
import { PROTO_BY_NAME } from './ports.ts';
import type { NamedPort, NamedPortProvider } from './resolve-options.ts';

/** Named container ports by identity: the egress named-port provider. */
export class NamedPortIndex implements NamedPortProvider {
  readonly #byOwner = new Map<string, { identity: number; ports: readonly NamedPort[] }>();
  #byIdentity = new Map<number, Map<string, { port: number; proto: number }[]>>();
  #any = new Map<string, { port: number; proto: number }[]>();
  #dirty = false;
  #version = 0;

  get version(): number {
    return this.#version;
  }

  /** Sets the named ports of one owner (a pod, `ns/name`); returns whether anything changed. */
  set(owner: string, identity: number, ports: readonly NamedPort[]): boolean {
    const prev = this.#byOwner.get(owner);
    if (prev && prev.identity === identity && JSON.stringify(prev.ports) === JSON.stringify(ports)) return false;
    if (ports.length === 0 && !prev) return false;
    if (ports.length === 0) this.#byOwner.delete(owner);
    else this.#byOwner.set(owner, { identity, ports });
    this.#dirty = true;
    this.#version++;
    return true;
  }

  delete(owner: string): boolean {
    if (!this.#byOwner.delete(owner)) return false;
    this.#dirty = true;
    this.#version++;
    return true;
  }

  forIdentity(identity: number, name: string): readonly { port: number; proto: number }[] {
    this.#rebuild();
    return this.#byIdentity.get(identity)?.get(name) ?? [];
  }

  any(name: string): readonly { port: number; proto: number }[] {
    this.#rebuild();
    return this.#any.get(name) ?? [];
  }

  #rebuild(): void {
    if (!this.#dirty) return;
    this.#dirty = false;
    this.#byIdentity = new Map();
    this.#any = new Map();
    const add = (m: Map<string, { port: number; proto: number }[]>, n: NamedPort) => {
      const arr = m.get(n.name) ?? [];
      if (!arr.some((x) => x.port === n.port && x.proto === n.proto)) arr.push({ port: n.port, proto: n.proto });
      m.set(n.name, arr);
    };
    for (const { identity, ports } of this.#byOwner.values()) {
      let m = this.#byIdentity.get(identity);
      if (!m) this.#byIdentity.set(identity, (m = new Map()));
      for (const p of ports) { add(m, p); add(this.#any, p); }
    }
  }
}

/** The named container ports of a pod (names lower-cased, protocol default TCP). */
export function podNamedPorts(pod: Pick<Pod, 'spec'>): NamedPort[] {
  const out: NamedPort[] = [];
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) {
      if (!p.name) continue;
      out.push({ name: p.name.toLowerCase(), port: p.containerPort, proto: PROTO_BY_NAME[(p.protocol ?? 'TCP').toUpperCase()] ?? 6 });
    }
  }
  return out;
}
