/**
 * The attacker's side of the e2e attack tests: a lab pod's namespaces and MACs for raw frames
 * (frames.ts sends them with dist/rawpkt through `nsenter --net`), the world namespace where
 * the outside hosts live (captures there show what reached them), and the policies.
 */
import { execFileSync } from 'node:child_process';
import { hostIfname, nodeNetnsName, podNetnsName, worldNetnsName } from '../../../src/lab/names.ts';
import { ifaceMac, sendFrames } from './frames.ts';
import type { TestLab } from './lab.ts';

export const API = '198.51.100.20'; // api.openai.com in the lab's world
export const FORBIDDEN = '198.51.100.10'; // echo-a.world.lab: TCP 80/8080, UDP 7
export const NODE_IP = '192.0.2.1';
/** The world namespace's side of node1's world link: frames arriving from the lab. */
export const WORLD_IFACE = 'mbr_node1';

export interface PodNet { netns: string; ip: string; mac: string; gw: string }

/** A lab pod (on node1) as raw frames see it: its netns, address, MAC and its gateway's MAC. */
export function podNet(lab: TestLab, ns: string, pod: string, ip: string): PodNet {
  const netns = podNetnsName('node1', ns, pod, lab.name);
  return { netns, ip, mac: ifaceMac(netns, 'eth0'), gw: ifaceMac(nodeNetnsName('node1', lab.name), hostIfname(ns, pod)) };
}

export function worldNetns(lab: TestLab): string {
  return worldNetnsName(lab.name);
}

export function nodeNetns(lab: TestLab): string {
  return nodeNetnsName('node1', lab.name);
}

/** MAC of node1's world link (the world's next hop to the lab). */
export function worldGatewayMac(lab: TestLab): string {
  return ifaceMac(nodeNetns(lab), 'mbr_world');
}

export function send(p: PodNet, frames: Buffer[]): number {
  return sendFrames(p.netns, 'eth0', frames);
}

/** Local ports of the pod's TCP connections to ip:port (ss in the pod's namespace). */
export function tcpLocalPorts(netns: string, ip: string, port: number): number[] {
  const out = execFileSync('nsenter', [`--net=/run/netns/${netns}`, 'ss', '-Htn', 'state', 'established', 'dst', `${ip}:${port}`], { encoding: 'utf8' });
  return out.split('\n').map((l) => /\s\S+:(\d+)\s+\S+:\d+\s*$/.exec(l)?.[1]).filter((x): x is string => !!x).map(Number);
}

export const ns = (name: string) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });

export function pod(namespace: string, name: string, labels: Record<string, string>, opts: { ports?: number[]; command?: string[] } = {}): object {
  const ports = opts.ports ?? [8080];
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels },
    spec: {
      containers: [opts.command
        ? { name: 'c', image: 'busybox', command: opts.command }
        : { name: 'c', image: 'ealen/echo-server', ports: ports.flatMap((p) => [{ containerPort: p, protocol: 'TCP' }, { containerPort: p, protocol: 'UDP' }]) }],
    },
  };
}

export function cnp(namespace: string, name: string, spec: object): object {
  return { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace }, spec };
}

/** Egress to one CIDR on some TCP (and UDP) ports: everything else is default-denied. */
export function egressTo(cidr: string, tcpPorts: number[], udpPorts: number[] = []): object {
  return {
    toCIDR: [cidr],
    toPorts: [{ ports: [...tcpPorts.map((p) => ({ port: String(p), protocol: 'TCP' })), ...udpPorts.map((p) => ({ port: String(p), protocol: 'UDP' }))] }],
  };
}
