/**
 * The CNI protocol's variables (CNI SPEC.md "Parameters"), which the runtime sets for each call of
 * membrane-cni (plugin.ts). They are the call's arguments, not settings. Read here and not in
 * src/common/config.ts (the settings' one reader of the environment): the plugin starts once per
 * container and loading the 28 kB settings table cost its start more than this whole file
 * (scripts/lint.ts ENV_READERS lists both).
 */
export interface CniEnvironment { command?: string; containerId?: string; netns?: string; ifname?: string; args?: string; path?: string }

export function cniEnvironment(env: NodeJS.ProcessEnv = process.env): CniEnvironment {
  const out: CniEnvironment = {};
  const set = (k: keyof CniEnvironment, e: string) => { const x = env[e]; if (x !== undefined && x !== '') out[k] = x; };
  set('command', 'CNI_COMMAND'); set('containerId', 'CNI_CONTAINERID'); set('netns', 'CNI_NETNS');
  set('ifname', 'CNI_IFNAME'); set('args', 'CNI_ARGS'); set('path', 'CNI_PATH');
  return out;
}
