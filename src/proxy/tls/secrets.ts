/**
 * The agent's Secrets as TLS material for terminatingTLS / originatingTLS (spec/policy.md §3.7):
 * every entry decoded (`data` is base64, `stringData` plain), read at start and on every change
 * of a Secret. Issuers (the CA of a terminatingTLS Secret) are built once per Secret content and
 * cached. Certificates and keys stay in this process; nothing is written anywhere.
 */
import type { Secret, TLSContext } from '../../api/types.ts';
import { CertificateIssuer } from './issuer.ts';

export interface SecretStore {
  list(kind: 'Secret'): Promise<unknown[]>;
  watch(cb: (ev: { type: 'put'; resource: { kind: string } } | { type: 'delete'; key: string }) => void): () => void;
}

export interface Logger { warn(o: unknown, m?: string): void }

/** TLSContext items with Cilium's defaults. */
export function contextItems(c: TLSContext): { certificate: string; privateKey: string; trustedCA: string } {
  return { certificate: c.certificate || 'tls.crt', privateKey: c.privateKey || 'tls.key', trustedCA: c.trustedCA || 'ca.crt' };
}

export class TlsSecrets {
  readonly #secrets = new Map<string, Record<string, string>>();
  readonly #issuers = new Map<string, { crt: string; key: string; issuer: Promise<CertificateIssuer>; ready?: CertificateIssuer }>();
  #unwatch: (() => void) | undefined;
  #rev = 0;

  /** changes whenever a Secret changes */
  get revision(): number {
    return this.#rev;
  }

  set(namespace: string, name: string, data: Record<string, string> | undefined): void {
    const k = `${namespace}/${name}`;
    if (data) this.#secrets.set(k, data);
    else this.#secrets.delete(k);
    this.#rev++;
  }

  get(namespace: string, name: string): Record<string, string> | undefined {
    return this.#secrets.get(`${namespace}/${name}`);
  }

  async load(store: SecretStore): Promise<void> {
    const list = (await store.list('Secret')) as Secret[];
    this.#secrets.clear();
    for (const s of list) {
      const data: Record<string, string> = {};
      for (const [k, v] of Object.entries(s.data ?? {})) data[k] = Buffer.from(v, 'base64').toString('utf8');
      for (const [k, v] of Object.entries(s.stringData ?? {})) data[k] = v;
      this.#secrets.set(`${s.metadata.namespace ?? 'default'}/${s.metadata.name}`, data);
    }
    this.#rev++;
  }

  async start(store: SecretStore | undefined, logger?: Logger): Promise<void> {
    if (!store) return;
    await this.load(store).catch((e: unknown) => logger?.warn({ err: String(e) }, 'secrets for TLS'));
    this.#unwatch = store.watch((ev) => {
      if (ev.type === 'delete' ? ev.key.includes('Secret') : ev.resource.kind === 'Secret') {
        void this.load(store).catch((e: unknown) => logger?.warn({ err: String(e) }, 'secrets for TLS'));
      }
    });
  }

  stop(): void {
    this.#unwatch?.();
    this.#unwatch = undefined;
  }

  /** The item of a TLSContext's Secret, or why it is missing. */
  item(ctx: TLSContext, defaultNamespace: string, which: 'certificate' | 'privateKey' | 'trustedCA'): { value: string } | { error: string } {
    const ns = ctx.secret.namespace || defaultNamespace;
    const s = this.get(ns, ctx.secret.name);
    if (!s) return { error: `secret ${ns}/${ctx.secret.name} not found` };
    const key = contextItems(ctx)[which];
    const v = s[key];
    if (!v) return { error: `secret ${ns}/${ctx.secret.name} has no ${key}` };
    return { value: v };
  }

  /** The leaf issuer of a terminatingTLS context (its Secret's CA certificate and key). */
  issuer(ctx: TLSContext, defaultNamespace: string): Promise<CertificateIssuer> {
    const crt = this.item(ctx, defaultNamespace, 'certificate');
    const key = this.item(ctx, defaultNamespace, 'privateKey');
    if ('error' in crt) return Promise.reject(new Error(crt.error));
    if ('error' in key) return Promise.reject(new Error(key.error));
    const id = `${ctx.secret.namespace || defaultNamespace}/${ctx.secret.name}`;
    // compared item by item (the same strings until the Secret changes): no per-connection concatenation
    const hit = this.#issuers.get(id);
    if (hit && hit.crt === crt.value && hit.key === key.value) return hit.issuer;
    const issuer = CertificateIssuer.fromPem(crt.value, key.value);
    const entry: { crt: string; key: string; issuer: Promise<CertificateIssuer>; ready?: CertificateIssuer } = { crt: crt.value, key: key.value, issuer };
    issuer.then((i) => { entry.ready = i; }, () => {});
    this.#issuers.set(id, entry);
    return issuer;
  }

  /** The issuer of a terminatingTLS context when it is built and its Secret unchanged, else undefined (then issuer()). */
  issuerNow(ctx: TLSContext, defaultNamespace: string): CertificateIssuer | undefined {
    const s = this.get(ctx.secret.namespace || defaultNamespace, ctx.secret.name);
    if (!s) return undefined;
    const items = contextItems(ctx);
    const hit = this.#issuers.get(`${ctx.secret.namespace || defaultNamespace}/${ctx.secret.name}`);
    return hit?.ready && hit.crt === s[items.certificate] && hit.key === s[items.privateKey] ? hit.ready : undefined;
  }
}
