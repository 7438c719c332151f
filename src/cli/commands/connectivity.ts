/**
 * `membrane connectivity test [--test NAME...] [--test-namespace NS]`: Cilium's connectivity
 * battery (src/cli/connectivity) on the running lab, or with `--podman` on podman containers
 * protected by this host's agent (`membrane agent` + membrane-cni). Exit status 1 when any test
 * failed.
 */
import type { Command } from 'commander';
import { hostname } from 'node:os';
import type { MembraneConfig } from '../../common/config.ts';
import { labPaths } from '../../common/paths.ts';
import { labNodes, nodeName } from '../../lab/index.ts';
import { MembraneError } from '../../common/errors.ts';
import { runConnectivityTest } from '../connectivity/runner.ts';
import { labWorkloads } from '../connectivity/lab-workloads.ts';
import { podmanWorkloads } from '../connectivity/podman-workloads.ts';

interface Opts { test: string[]; testNamespace: string; probeTimeout: number; podman?: boolean; image?: string; agentSocket?: string; verbose?: boolean }

export function register(program: Command, config: MembraneConfig): void {
  const conn = program.command('connectivity').description('Validate the install: Cilium\'s connectivity battery');
  conn.command('test')
    .description('Deploy test workloads in their own namespace and run the connectivity tests (pod-to-pod, services, world, L3/L4/L7 policy, DNS and FQDN)')
    .option('--test <name...>', 'run only tests whose name matches (regexp); a leading ! excludes', [])
    .option('--test-namespace <ns>', 'namespace of the test workloads', 'membrane-test')
    .option('--probe-timeout <ms>', 'ms each probe may take', (v) => Number(v), 4000)
    .option('-v, --verbose', 'print every action with its expected and actual outcome')
    .option('--podman', 'run the workloads as podman containers on this host\'s agent (host mode) instead of lab pods')
    .option('--image <ref>', 'with --podman: a local image with busybox (sh, httpd, sleep); nothing is pulled')
    .option('--agent-socket <path>', 'with --podman: the host agent\'s API socket (default: the one for this hostname)')
    .action(async (o: Opts) => {
      const filters = o.test.flatMap((t) => t.split(',')).filter(Boolean);
      const common = { namespace: o.testNamespace, filters, out: (s: string) => process.stdout.write(`${s}\n`), probeTimeoutMs: o.probeTimeout, verbose: o.verbose === true };
      if (o.podman) {
        if (!o.image) throw new MembraneError('CONNECTIVITY_NO_IMAGE', '--podman needs --image: a local image with busybox (sh, httpd, sleep)', { hint: 'e.g. import a busybox-static rootfs with `podman import` (nothing is pulled)' });
        const socket = o.agentSocket ?? `/run/membrane/host/nodes/${hostname()}/agent.sock`;
        process.exitCode = await runConnectivityTest({ ...common, sockets: [socket], workloads: podmanWorkloads({ podman: ['podman'], image: o.image }) });
        return;
      }
      const paths = labPaths(config);
      const nodes = (await labNodes(config.lab)).map(nodeName);
      if (!nodes.length) throw new MembraneError('CONNECTIVITY_NO_LAB', `lab ${config.lab} is not running`, { hint: 'start it with `membrane up` (or `membrane up --nodes 3`), or test containers with --podman' });
      const sockets = nodes.map((n) => paths.agentSocket(n));
      process.exitCode = await runConnectivityTest({ ...common, sockets, workloads: labWorkloads(config.lab, sockets) });
    });
}
