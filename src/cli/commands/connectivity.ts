/**
 * `membrane connectivity test [--test NAME...] [--test-namespace NS]`: Cilium's connectivity
 * battery on the running lab (src/cli/connectivity). Exit status 1 when any test failed.
 */
import type { Command } from 'commander';
import type { MembraneConfig } from '../../common/config.ts';
import { labPaths } from '../../common/paths.ts';
import { labNodes, nodeName } from '../../lab/index.ts';
import { MembraneError } from '../../common/errors.ts';
import { runConnectivityTest } from '../connectivity/runner.ts';

export function register(program: Command, config: MembraneConfig): void {
  const conn = program.command('connectivity').description('Validate the install: Cilium\'s connectivity battery');
  conn.command('test')
    .description('Deploy test workloads in their own namespace and run the connectivity tests (pod-to-pod, services, world, L3/L4/L7 policy, DNS and FQDN)')
    .option('--test <name...>', 'run only tests whose name matches (regexp); a leading ! excludes', [])
    .option('--test-namespace <ns>', 'namespace of the test workloads', 'membrane-test')
    .option('--probe-timeout <ms>', 'ms each probe may take', (v) => Number(v), 4000)
    .action(async (o: { test: string[]; testNamespace: string; probeTimeout: number }) => {
      const paths = labPaths(config);
      const nodes = (await labNodes(config.lab)).map(nodeName);
      if (!nodes.length) throw new MembraneError('CONNECTIVITY_NO_LAB', `lab ${config.lab} is not running`, { hint: 'start it with `membrane up` (or `membrane up --nodes 3`)' });
      const filters = o.test.flatMap((t) => t.split(',')).filter(Boolean);
      process.exitCode = await runConnectivityTest({
        lab: config.lab, sockets: nodes.map((n) => paths.agentSocket(n)), namespace: o.testNamespace, filters,
        out: (s) => process.stdout.write(`${s}\n`), probeTimeoutMs: o.probeTimeout,
      });
    });
}
