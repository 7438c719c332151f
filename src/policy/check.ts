/**
 * The semantic check the loader runs on each policy (src/api/load.ts `policyCheck`): the
 * translator's issues, each at its YAML path, nothing translated is kept.
 */
import type { PolicyCheck } from '../api/load.ts';
import { translatePolicy } from './translate.ts';

export const policyCheck: PolicyCheck = (policy, locate) => translatePolicy(policy, { locate: (r, p) => locate(r, p) }).issues;
