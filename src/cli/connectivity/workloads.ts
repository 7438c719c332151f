/**
 * Where the battery's test workloads run: the seam between the runner (runner.ts) and what starts
 * them. On a lab they are pods the agent runs (lab-workloads.ts); on a host-mode agent they are
 * real containers a runtime starts through membrane-cni (podman-workloads.ts). Either way the
 * runner applies the same policies through the agent and probes with curl from inside the
 * workload's network namespace.
 */
import type { RunResult } from '../../sys/proc.ts';

export interface WorkloadSpec {
  name: string;
  labels: Record<string, string>;
  /** echo servers answer HTTP on these ports; clients only dial */
  role: 'client' | 'echo';
  node: string;
}

export interface TestWorkloads {
  /** one line for the header: what runs the workloads */
  readonly describe: string;
  /** what the environment offers beyond pod-to-pod: tests needing more are skipped */
  readonly features: { services: boolean; world: boolean };
  /** starts the workloads in `ns`; resolves once each is ready, with every echo's address */
  deploy(ns: string, specs: WorkloadSpec[]): Promise<Record<string, string>>;
  /** runs argv in the workload's network namespace */
  exec(ns: string, name: string, argv: string[], timeoutMs: number): Promise<RunResult>;
  /** removes every workload it started (also after a failure) */
  remove(ns: string): Promise<void>;
}
