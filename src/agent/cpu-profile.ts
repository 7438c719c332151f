/**
 * MEMBRANE_AGENT_CPU_PROFILE=<dir> (the agentCpuProfile setting): a V8 CPU profile of the running agent, from when it is ready
 * to when it stops (written to <dir>/agent-<node>-<pid>.cpuprofile). Node's --cpu-prof cannot do
 * this for an agent: its sampling signal, pending while the kernel verifies the datapath's
 * programs at start, makes the verifier give up (EAGAIN), and the agent does not start.
 */
import { Session } from 'node:inspector/promises';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface CpuProfile { stop(): Promise<void> }

export async function startCpuProfile(dir: string | undefined, node: string): Promise<CpuProfile | undefined> {
  if (!dir) return undefined;
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  // 500 µs: a 1 µs event path seen over a few seconds of flows
  await session.post('Profiler.setSamplingInterval', { interval: 500 });
  await session.post('Profiler.start');
  return {
    async stop() {
      const { profile } = await session.post('Profiler.stop');
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, `agent-${node}-${process.pid}.cpuprofile`), JSON.stringify(profile));
      session.disconnect();
    },
  };
}
