/**
 * The semantic check the loader runs on each policy (src/api/load.ts `policyCheck`): the
 * translator's issues (an AIPolicy's own translator for that kind), each at its YAML path,
 * nothing translated is kept.
 */
import type { PolicyCheck } from '../api/load.ts';
import { translateAIPolicy } from './ai.ts';
import { translatePolicy } from './translate.ts';

export const policyCheck: PolicyCheck = (policy, locate) => (policy.kind === 'AIPolicy'
  ? translateAIPolicy(policy, { locate: (r, p) => locate(r, p) }).issues
  : translatePolicy(policy, { locate: (r, p) => locate(r, p) }).issues);
