/**
 * Policy routing for packets the datapath steers to a local L7 proxy (bpf_sk_assign sets skb
 * mark 0x200, Cilium's MARK_MAGIC_TO_PROXY): such packets must be delivered locally even though
 * their destination address is not local, so `fwmark 0x200/0xf00` looks up table 2004, whose only
 * route is `local 0.0.0.0/0 dev lo` (Cilium's proxy routing). Runs in the calling process's
 * network namespace (the agent runs in its node's namespace). Idempotent.
 */
import { run, runOk } from './proc.ts';
import { MembraneError } from '../common/errors.ts';

export const PROXY_MARK = 0x200;
export const PROXY_MARK_MASK = 0xf00;
export const PROXY_TABLE = 2004;
export const PROXY_RULE_PREF = 9;

/** Adds the fwmark rule (once) and the local default route of table 2004 (replace). */
export async function ensureProxyRouting(): Promise<void> {
  const rules = await run('ip', ['-j', 'rule', 'show', 'pref', String(PROXY_RULE_PREF)]);
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
    const add = await run('ip', ['rule', 'add', 'fwmark', `0x${PROXY_MARK.toString(16)}/0x${PROXY_MARK_MASK.toString(16)}`, 'lookup', String(PROXY_TABLE), 'pref', String(PROXY_RULE_PREF)]);
    if (add.code !== 0 && !/File exists/.test(add.stderr)) {
      throw new MembraneError('NET_PROXY_ROUTING', `ip rule add fwmark 0x200/0xf00 lookup ${PROXY_TABLE}: ${add.stderr.trim()}`, { hint: 'needs root (CAP_NET_ADMIN) in the node namespace' });
    }
  }
  await runOk('ip', ['route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(PROXY_TABLE)], { code: 'NET_PROXY_ROUTING', hint: 'needs root (CAP_NET_ADMIN) in the node namespace' });
}

/** Removes the rule and the table's route (absent is fine). */
export async function removeProxyRouting(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    const r = await run('ip', ['rule', 'del', 'fwmark', `0x${PROXY_MARK.toString(16)}/0x${PROXY_MARK_MASK.toString(16)}`, 'lookup', String(PROXY_TABLE), 'pref', String(PROXY_RULE_PREF)]);
    if (r.code !== 0) break;
  }
  await run('ip', ['route', 'flush', 'table', String(PROXY_TABLE)]);
}
