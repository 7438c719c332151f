/**
 * Policy routing for packets the datapath steers to a local L7 proxy (bpf_sk_assign sets skb
 * mark 0x200, Cilium's MARK_MAGIC_TO_PROXY): such packets must be delivered locally even though
 * their destination address is not local, so `fwmark 0x200/0xf00` looks up table 2004, whose only
 * route is `local 0.0.0.0/0 dev lo` (and `local ::/0 dev lo` for IPv6; Cilium's proxy routing). Runs in the calling process's
 * network namespace (the agent runs in its node's namespace). Idempotent.
 */
import { run, runOk } from './proc.ts';
import { MembraneError } from '../common/errors.ts';

export const PROXY_MARK = 0x200;
export const PROXY_MARK_MASK = 0xf00;
export const PROXY_TABLE = 2004;
export const PROXY_RULE_PREF = 9;

/** The `ip` arguments of a family (`-6` for IPv6) and its default route. */
const FAMILIES = { 4: { flag: [] as string[], any: '0.0.0.0/0' }, 6: { flag: ['-6'], any: '::/0' } } as const;
const MARK_ARG = `0x${PROXY_MARK.toString(16)}/0x${PROXY_MARK_MASK.toString(16)}`;

/**
 * Adds the fwmark rule (once) and the local default route of table 2004 (replace), for IPv4 and,
 * with `ipv6` (enable-ipv6: the datapath steers IPv6 connections too), for IPv6.
 */
export async function ensureProxyRouting(o: { ipv6?: boolean } = {}): Promise<void> {
  for (const fam of o.ipv6 ? [4, 6] as const : [4] as const) {
    const { flag, any } = FAMILIES[fam];
    const rules = await run('ip', [...flag, '-j', 'rule', 'show', 'pref', String(PROXY_RULE_PREF)]);
    let have = false;
    if (rules.code === 0 && rules.stdout.trim()) {
      try {
        const list = JSON.parse(rules.stdout) as { priority?: number; fwmark?: string; fwmask?: string; table?: string }[];
        have = list.some((r) => r.priority === PROXY_RULE_PREF && Number(r.fwmark) === PROXY_MARK && Number(r.fwmask) === PROXY_MARK_MASK && String(r.table) === String(PROXY_TABLE));
      } catch {
        have = false;
      }
    }
    if (!have) {
      const add = await run('ip', [...flag, 'rule', 'add', 'fwmark', MARK_ARG, 'lookup', String(PROXY_TABLE), 'pref', String(PROXY_RULE_PREF)]);
      if (add.code !== 0 && !/File exists/.test(add.stderr)) {
        throw new MembraneError('NET_PROXY_ROUTING', `ip ${flag.join('')} rule add fwmark ${MARK_ARG} lookup ${PROXY_TABLE}: ${add.stderr.trim()}`.replace('ip  ', 'ip '), { hint: 'needs root (CAP_NET_ADMIN) in the node namespace' + (fam === 6 ? ', and IPv6 on its lo' : '') });
      }
    }
    await runOk('ip', [...flag, 'route', 'replace', 'local', any, 'dev', 'lo', 'table', String(PROXY_TABLE)], { code: 'NET_PROXY_ROUTING', hint: 'needs root (CAP_NET_ADMIN) in the node namespace' + (fam === 6 ? ', and IPv6 on its lo' : '') });
  }
}

/** Removes the rules and the table's routes of both families (absent is fine). */
export async function removeProxyRouting(): Promise<void> {
  for (const fam of [4, 6] as const) {
    const { flag } = FAMILIES[fam];
    for (let i = 0; i < 4; i++) {
      const r = await run('ip', [...flag, 'rule', 'del', 'fwmark', MARK_ARG, 'lookup', String(PROXY_TABLE), 'pref', String(PROXY_RULE_PREF)]);
      if (r.code !== 0) break;
    }
    await run('ip', [...flag, 'route', 'flush', 'table', String(PROXY_TABLE)]);
  }
}
