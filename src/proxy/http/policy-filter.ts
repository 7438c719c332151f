/**
 * The L7 policy filter: an HTTP filter that looks up the connection's L7 policy (the MapState
 * entry the datapath redirected on) and decides each request with decideHTTP (RE2 full-string
 * regexes compiled once per rule). Denied ⇒ Cilium's 403 and `stop`; allowed ⇒ headerMatches
 * mismatch actions (LOG/ADD/DELETE/REPLACE) carried out on the request head, then `continue`.
 */
import { decideHTTP, type HeaderAction, type L7Verdict } from '../../policy/l7.ts';
import type { L7Policy } from '../../policy/types.ts';
import type { HttpFilter } from '../filter-chain.ts';
import type { HttpStream } from './stream.ts';

/** Whether any rule of the policy looks at headers (otherwise no header record is built). */
const needsHeaders = new WeakMap<L7Policy, boolean>();
function policyNeedsHeaders(p: L7Policy): boolean {
  let v = needsHeaders.get(p);
  if (v === undefined) {
    v = p.perSelector.some((e) => e.http?.some((r) => (r.headers?.length ?? 0) > 0 || (r.headerMatches?.length ?? 0) > 0) ?? false);
    needsHeaders.set(p, v);
  }
  return v;
}

/**
 * Decisions of header-free policies by (identity, method, host, path): regexes are pure, so a
 * repeated request line is decided once. Looked up level by level with the strings as parsed (no
 * key string made per request: it was a quarter of a keep-alive request's garbage in the policy
 * filter). Bounded: past MAX_CACHED decisions a policy's cache starts over; a new policy object
 * starts a new cache.
 */
interface DecisionCache {
  size: number;
  byIdentity: Map<number, Map<string, Map<string, Map<string, L7Verdict>>>>;
}
const decisions = new WeakMap<L7Policy, DecisionCache>();
const MAX_CACHED = 4096;

function headerRecord(flat: readonly string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]!.toLowerCase();
    const v = flat[i + 1]!;
    const have = out[k];
    if (have === undefined) out[k] = v;
    else if (Array.isArray(have)) have.push(v);
    else out[k] = [have, v];
  }
  return out;
}

export function applyHeaderActions(headers: string[], actions: readonly HeaderAction[]): { headers: string[]; modified: boolean; log: string[] } {
  let out = headers;
  let modified = false;
  const log: string[] = [];
  for (const a of actions) {
    log.push(`${a.action} ${a.name}`);
    switch (a.action) {
      case 'LOG':
        break;
      case 'ADD':
        out = [...out, a.name, a.value];
        modified = true;
        break;
      case 'DELETE': {
        const next: string[] = [];
        for (let i = 0; i < out.length; i += 2) if (out[i]!.toLowerCase() !== a.name) next.push(out[i]!, out[i + 1]!);
        out = next;
        modified = true;
        break;
      }
      case 'REPLACE': {
        const next: string[] = [];
        let done = false;
        for (let i = 0; i < out.length; i += 2) {
          if (out[i]!.toLowerCase() === a.name) {
            if (!done) next.push(out[i]!, a.value);
            done = true;
          } else next.push(out[i]!, out[i + 1]!);
        }
        if (!done) next.push(a.name, a.value);
        out = next;
        modified = true;
        break;
      }
    }
  }
  return { headers: out, modified, log };
}

/** The decision of one L7 policy for the stream's request (cached when the rules ignore headers). */
function decide(s: HttpStream, l7: L7Policy, identity: number): L7Verdict {
  const head = s.head;
  if (policyNeedsHeaders(l7)) {
    return decideHTTP(l7, identity, { method: head.method, path: s.path, host: s.host, headers: headerRecord(s.requestHeaders()) }, s.conn.secretOpts);
  }
  let cache = decisions.get(l7);
  if (!cache) decisions.set(l7, (cache = { size: 0, byIdentity: new Map() }));
  const byMethod = cache.byIdentity.get(identity);
  const byHost = byMethod?.get(head.method);
  const byPath = byHost?.get(s.host);
  const v = byPath?.get(s.path);
  if (v) return v;
  const made = decideHTTP(l7, identity, { method: head.method, path: s.path, host: s.host }, s.conn.secretOpts);
  if (cache.size >= MAX_CACHED) {
    cache.size = 0;
    cache.byIdentity = new Map();
  }
  cache.size++;
  let m1 = cache.byIdentity.get(identity);
  if (!m1) cache.byIdentity.set(identity, (m1 = new Map()));
  let m2 = m1.get(head.method);
  if (!m2) m1.set(head.method, (m2 = new Map()));
  let m3 = m2.get(s.host);
  if (!m3) m2.set(s.host, (m3 = new Map()));
  m3.set(s.path, made);
  return made;
}

export function createPolicyFilter(): HttpFilter<HttpStream> {
  return {
    name: 'cilium.l7policy',
    decodeHeaders(s) {
      const pol = s.conn.policy();
      if (pol.verdict === 'drop') {
        s.deny('policy: no allow entry for this connection');
        return 'stop';
      }
      // made only when a rule has header actions (none for most requests)
      let actions: HeaderAction[] | null = null;
      if (pol.verdict === 'redirect' && pol.l7 && pol.l7.parser === 'http') {
        const v = decide(s, pol.l7, s.conn.remoteIdentity);
        if (!v.allowed) {
          s.deny('policy: no L7 rule matches');
          return 'stop';
        }
        if (v.headerActions) (actions ??= []).push(...v.headerActions);
      }
      const peer = s.conn.peerIngress();
      if (peer?.l7 && peer.l7 !== pol.l7 && peer.l7.parser === 'http') {
        const v = decide(s, peer.l7, s.conn.client.identity);
        if (!v.allowed) {
          s.deny('policy: no L7 rule of the destination\'s ingress matches');
          return 'stop';
        }
        if (v.headerActions) (actions ??= []).push(...v.headerActions);
      }
      if (actions?.length) {
        const r = applyHeaderActions([...s.requestHeaders()], actions);
        s.headerActions = r.log;
        if (r.modified) s.setHeaders(r.headers);
      }
      return 'continue';
    },
  };
}
