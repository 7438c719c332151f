/**
 * Image handler for the Star Wars demo: `cilium/starwars` (any registry, tag or digest) runs the
 * deathstar server (workloads/starwars.ts) on its containerPorts (default 80).
 */
import { join } from 'node:path';
import type { PlanContext, WorkloadPlan } from './workload-plan.ts';

export function starwarsHandler(ctx: PlanContext): WorkloadPlan | undefined {
  const img = (ctx.container.image ?? '').toLowerCase();
  if (!/(^|\/)cilium\/starwars([:@]|$)/.test(img)) return undefined;
  const port = ctx.container.ports?.find((p) => (p.protocol ?? 'TCP') === 'TCP')?.containerPort ?? 80;
  const readyFile = join(ctx.dir, `${ctx.container.name}.ready`);
  const marker = `--id=${ctx.id}`;
  return {
    kind: 'custom',
    argv: [...ctx.nodeArgv, ctx.program('starwars'), marker, `--pod=${ctx.pod.metadata.name}`, `--port=${port}`, `--ready=${readyFile}`],
    marker, readyFile,
  };
}
