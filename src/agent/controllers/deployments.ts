/**
 * Deployment controller: a Deployment becomes `replicas` Pods named like Kubernetes names them
 * (`<deployment>-<template hash>-<suffix>`), labelled with `pod-template-hash`, owned by the
 * Deployment. Pure: given the Deployments and the Pods that exist, returns the Pods to create and
 * the Pod names to delete, so a re-apply of the same Deployment changes nothing.
 */
import { createHash } from 'node:crypto';
import type { Deployment, Pod } from '../../api/types.ts';
import { stableJson } from '../resources.ts';

const ALPHABET = 'bcdfghjklmnpqrstvwxz2456789'; // Kubernetes' SafeEncodeString alphabet

function safeEncode(hex: string, n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) out += ALPHABET[parseInt(hex.slice(i * 2, i * 2 + 2), 16) % ALPHABET.length];
  return out;
}

export function templateHash(d: Deployment): string {
  return safeEncode(createHash('sha256').update(stableJson(d.spec.template)).digest('hex'), 10);
}

export const OWNER_ANNOTATION = 'membrane.dev/owned-by';

export function desiredPods(d: Deployment): Pod[] {
  const hash = templateHash(d);
  const replicas = d.spec.replicas ?? 1;
  const pods: Pod[] = [];
  for (let i = 0; i < replicas; i++) {
    const suffix = safeEncode(createHash('sha256').update(`${d.metadata.namespace}/${d.metadata.name}/${hash}/${i}`).digest('hex'), 5);
    const tmeta = d.spec.template.metadata ?? {};
    pods.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `${d.metadata.name}-${hash}-${suffix}`,
        namespace: d.metadata.namespace ?? 'default',
        labels: { ...(tmeta.labels ?? {}), 'pod-template-hash': hash },
        annotations: { ...(tmeta.annotations ?? {}), [OWNER_ANNOTATION]: `Deployment/${d.metadata.name}` },
      },
      spec: structuredClone(d.spec.template.spec),
      source: d.source,
    });
  }
  return pods;
}

/** Pods to create and to delete so that the owned pods of every Deployment match the desired set. */
export function reconcileDeployments(deployments: Deployment[], pods: Pod[]): { create: Pod[]; delete: Pod[] } {
  const want = new Map<string, Pod>();
  for (const d of deployments) for (const p of desiredPods(d)) want.set(`${p.metadata.namespace}/${p.metadata.name}`, p);
  const have = new Map<string, Pod>();
  for (const p of pods) if (p.metadata.annotations?.[OWNER_ANNOTATION]?.startsWith('Deployment/')) have.set(`${p.metadata.namespace}/${p.metadata.name}`, p);
  return {
    create: [...want].filter(([k]) => !have.has(k)).map(([, p]) => p),
    delete: [...have].filter(([k]) => !want.has(k)).map(([, p]) => p),
  };
}
