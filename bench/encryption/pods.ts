/**
 * The encryption benches' two pods: a client on node1 and a server on node2 of a running lab,
 * applied with the lab's CLI, and waited for until both have their addresses.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { podNetnsName } from '../../src/lab/names.ts';

export interface BenchPods { clientNs: string; serverNs: string; serverIp: string }

/**
 * Applies the pods (`apply` runs `membrane apply -f FILE`), then waits up to 120 s for both pods'
 * namespaces and addresses (`sh` runs a command in a namespace); throws if the server has none on node2.
 */
export async function placeBenchPods(stateDir: string, lab: string, apply: (file: string) => void, sh: (ns: string, cmd: string[]) => string): Promise<BenchPods> {
  const podsFile = join(stateDir, 'bench-pods.yaml');
  writeFileSync(podsFile, [
    'apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}',
    'apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: bench}\nspec: {nodeName: node1, containers: [{name: c, image: curlimages/curl}]}',
    'apiVersion: v1\nkind: Pod\nmetadata: {name: server, namespace: bench}\nspec: {nodeName: node2, containers: [{name: c, image: curlimages/curl}]}',
  ].join('\n---\n'));
  apply(podsFile);
  const clientNs = podNetnsName('node1', 'bench', 'client', lab), serverNs = podNetnsName('node2', 'bench', 'server', lab);
  // on a loaded machine the agents take a while to make them
  const addrOf = (ns: string) => { try { return /inet (10\.244\.\d+\.\d+)/.exec(sh(ns, ['ip', '-4', 'addr', 'show', 'eth0']))?.[1]; } catch { return undefined; } };
  for (let i = 0; i < 600 && !(existsSync(`/run/netns/${clientNs}`) && existsSync(`/run/netns/${serverNs}`) && addrOf(clientNs) && addrOf(serverNs)); i++) await sleep(200);
  const serverIp = addrOf(serverNs);
  if (!serverIp?.startsWith('10.244.2.')) throw new Error(`the server pod has no address on node2 after 120 s (${serverIp})`);
  return { clientNs, serverNs, serverIp };
}
