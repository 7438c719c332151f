/**
 * Deployment controller: given the Deployments and the Pods that exist, the Pods to create and
 * the Pods to delete so that every Deployment owns exactly its desired Pods (src/api/deployment.ts).
 * Pure, so a re-apply of the same Deployment changes nothing.
 */
import type { Deployment, Pod } from '../../api/types.ts';
import { desiredPods, podOwner } from '../../api/deployment.ts';

/** Pods to create and to delete so that the owned pods of every Deployment match the desired set. */
export function reconcileDeployments(deployments: Deployment[], pods: Pod[]): { create: Pod[]; delete: Pod[] } {
  const want = new Map<string, Pod>();
  for (const d of deployments) for (const p of desiredPods(d)) want.set(`${p.metadata.namespace}/${p.metadata.name}`, p);
  const have = new Map<string, Pod>();
  for (const p of pods) if (podOwner(p)?.kind === 'Deployment') have.set(`${p.metadata.namespace}/${p.metadata.name}`, p);
  return {
    create: [...want].filter(([k]) => !have.has(k)).map(([, p]) => p),
    delete: [...have].filter(([k]) => !want.has(k)).map(([, p]) => p),
  };
}
