/**
 * Where a lab keeps its runtime state. Everything lives under one directory (tmpfs /run by
 * default: a reboot removes the namespaces too, so state must not outlive them), and BPF pins
 * under <bpffs>/<lab>-<node>. The directories come from the configuration (src/common/config.ts).
 */
import { join } from 'node:path';
import type { MembraneConfig } from './config.ts';

export interface LabPaths {
  lab: string;
  stateDir: string;
  nodeDir(node: string): string;
  agentSocket(node: string): string;
  hubbleSocket(node: string): string;
  /** root-only unix socket joined to the node's Hubble TCP 4244 (the lab Relay dials through it) */
  hubblePeerSocket(node: string): string;
  agentPidFile(node: string): string;
  agentLog(node: string): string;
  storeFile(node: string): string;
  pinRoot(node: string): string;
}

export function labPaths(config: Pick<MembraneConfig, 'lab' | 'stateDir' | 'bpffs'>): LabPaths {
  const { lab, stateDir, bpffs } = config;
  const nodeDir = (node: string) => join(stateDir, 'nodes', node);
  return {
    lab,
    stateDir,
    nodeDir,
    agentSocket: (node) => join(nodeDir(node), 'agent.sock'),
    hubbleSocket: (node) => join(nodeDir(node), 'hubble.sock'),
    hubblePeerSocket: (node) => join(nodeDir(node), 'hubble-peer.sock'),
    agentPidFile: (node) => join(nodeDir(node), 'agent.pid'),
    agentLog: (node) => join(nodeDir(node), 'agent.log'),
    storeFile: (node) => join(nodeDir(node), 'store.json'),
    pinRoot: (node) => join(bpffs, `${lab}-${node}`),
  };
}
