/**
 * The Pods a Deployment stands for: `replicas` Pods named like Kubernetes names them
 * (`<deployment>-<template hash>-<suffix>`), labelled with `pod-template-hash`, owned by the
 * Deployment (OWNER_ANNOTATION). Pure, so the agent's controller and offline `policy trace` derive
 * the same Pods from the same Deployment.
 */
import { createHash } from 'node:crypto';
import type { Deployment, Pod } from './types.ts';
import { stableJson } from '../common/stable-json.ts';

const ALPHABET = 'bcdfghjklmnpqrstvwxz2456789'; // Kubernetes' SafeEncodeString alphabet

/** `Kind/name` of the controller that owns a Pod (Hubble's `workloads`). */
export const OWNER_ANNOTATION = 'membrane.dev/owned-by';

function safeEncode(hex: string, n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) out += ALPHABET[parseInt(hex.slice(i * 2, i * 2 + 2), 16) % ALPHABET.length];
  return out;
}

export function templateHash(d: Deployment): string {
  return safeEncode(createHash('sha256').update(stableJson(d.spec.template)).digest('hex'), 10);
}

/** The owner of a Pod from its OWNER_ANNOTATION, e.g. { kind: 'Deployment', name: 'api' }. */
export function podOwner(pod: Pod): { kind: string; name: string } | undefined {
  const m = /^([A-Za-z]+)\/(.+)$/.exec(pod.metadata.annotations?.[OWNER_ANNOTATION] ?? '');
  return m ? { kind: m[1]!, name: m[2]! } : undefined;
}

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
