/**
 * What a workload plan is (workloads.ts plans the lab's containers; the image handlers in
 * workloads/ and dns/ make plans): apart from workloads.ts so that a handler need not import what
 * registers it.
 */
import type { Container, Pod } from '../api/types.ts';
import type { LabPaths } from '../common/paths.ts';
import type { PodNetworkInfo } from '../agent/pod-network.ts';

export type WorkloadKind = 'echo' | 'idle' | 'command' | 'custom';

/** What to run for one container. `argv` runs inside the pod's netns. */
export interface WorkloadPlan {
  kind: WorkloadKind;
  argv: string[];
  /** A string the running process's command line contains (adoption check). */
  marker?: string;
  /** A file the program creates once it serves (readiness); absent: ready when alive. */
  readyFile?: string;
  env?: Record<string, string>;
}

export interface PlanContext {
  pod: Pod;
  container: Container;
  net: PodNetworkInfo;
  repoRoot: string;
  /** Where this container's files go (pid, log, ready). */
  dir: string;
  /** Unique id: <lab>/<node>/<ns>/<pod>/<container>. */
  id: string;
  /** The lab's paths (sockets, state). */
  paths: LabPaths;
  /** Argv prefix that runs a program on the project's Node. */
  nodeArgv: string[];
  /** Path of a workload program by name (src/lab/workloads/<name>.ts, or its stripped copy). */
  program(name: string): string;
}

/** An image handler: return a plan to take the container, undefined to pass. */
export type ImageHandler = (ctx: PlanContext) => WorkloadPlan | undefined;
