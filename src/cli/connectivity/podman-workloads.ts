/**
 * The battery's workloads as podman containers on a host-mode agent (`membrane agent` with
 * membrane-cni as podman's network): each is `podman run -d` with its labels in CNI_ARGS
 * (MEMBRANE_LABELS, the namespace as io.kubernetes.pod.namespace; README "protect real
 * containers"), so ADD makes it an endpoint whose policy is in force before it runs. Echo
 * servers are the image's busybox httpd on the echo port; probes run the host's curl inside the
 * container's network namespace (the image needs no curl). Host mode has no ClusterIP DNS names
 * or world hosts: the tests about them are skipped.
 */
import { MembraneError } from '../../common/errors.ts';
import { run, type RunResult } from '../../sys/proc.ts';
import { ECHO_PORT } from './battery.ts';
import type { TestWorkloads } from './workloads.ts';

export interface PodmanWorkloadsOptions {
  /** the podman command (argv prefix), e.g. ['podman'] or with --root/--runroot */
  podman: string[];
  /** an image with busybox's sh, httpd and sleep and a writable /tmp */
  image: string;
  /** podman's environment (CONTAINERS_CONF…); unset: this process's */
  env?: Record<string, string>;
}

export function podmanWorkloads(o: PodmanWorkloadsOptions): TestWorkloads {
  const started: string[] = [];
  const netns = new Map<string, string>();
  // `env K=V podman …`: podman hands CNI_ARGS from its environment to the plugin
  const pm = (args: string[], extraEnv: Record<string, string> = {}, timeoutMs = 120_000): Promise<RunResult> =>
    run('env', [...Object.entries(extraEnv).map(([k, v]) => `${k}=${v}`), ...o.podman, ...args], { ...(o.env ? { env: o.env } : {}), timeoutMs });
  const ok = async (args: string[], extraEnv: Record<string, string> = {}): Promise<string> => {
    const r = await pm(args, extraEnv);
    if (r.code !== 0) throw new MembraneError('CONNECTIVITY_DEPLOY_FAILED', `podman ${args.slice(0, 4).join(' ')}… failed (${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' ')}`, { hint: 'is `membrane agent` running and membrane-cni podman\'s network? (README "protect real containers")' });
    return r.stdout;
  };
  const container = (ns: string, name: string) => `${ns}-${name}`;
  return {
    describe: `podman containers (image ${o.image}) on this host's agent`,
    features: { services: false, world: false },
    async deploy(ns, specs) {
      const ips: Record<string, string> = {};
      for (const w of specs) {
        const c = container(ns, w.name);
        const labels = Object.entries({ ...w.labels, 'io.kubernetes.pod.namespace': ns }).map(([k, v]) => `${k}=${v}`).join(',');
        const cmd = w.role === 'echo'
          // busybox httpd answers 200 for the files it has: /, /public and /private (the L7 test tells them apart)
          ? ['sh', '-c', `cd /tmp && for f in index.html public private; do echo ${w.name} > $f; done && exec httpd -f -p ${ECHO_PORT} -h /tmp`]
          : ['sleep', '3600'];
        started.push(c);
        // ADD returns once the endpoint's policy is in the datapath: the container is ready when run returns
        await ok(['run', '-d', '--name', c, o.image, ...cmd], { CNI_ARGS: `MEMBRANE_LABELS=${labels}` });
        const [ip = '', key = ''] = (await ok(['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}} {{.NetworkSettings.SandboxKey}}', c])).trim().split(' ');
        if (!ip || !key) throw new MembraneError('CONNECTIVITY_DEPLOY_FAILED', `container ${c} has no address or network namespace (podman inspect: "${ip} ${key}")`, { hint: 'its network must be membrane-cni\'s' });
        netns.set(c, key);
        if (w.role === 'echo') ips[w.name] = ip;
      }
      // httpd is up once it answers locally (inside the echo's own namespace, not through policy)
      for (const w of specs.filter((s) => s.role === 'echo')) {
        const deadline = Date.now() + 30_000;
        for (;;) {
          const r = await run('nsenter', [`--net=${netns.get(container(ns, w.name))}`, 'curl', '-s', '-o', '/dev/null', '--max-time', '2', `http://127.0.0.1:${ECHO_PORT}/`], { timeoutMs: 10_000 });
          if (r.code === 0) break;
          if (Date.now() > deadline) throw new MembraneError('CONNECTIVITY_DEPLOY_TIMEOUT', `echo server ${container(ns, w.name)} does not answer on ${ECHO_PORT} after 30 s`, { hint: 'the image must have busybox httpd' });
          await new Promise((r2) => setTimeout(r2, 200));
        }
      }
      return ips;
    },
    async exec(ns, name, argv, timeoutMs) {
      const key = netns.get(container(ns, name));
      if (!key) throw new MembraneError('CONNECTIVITY_NO_WORKLOAD', `no test container ${container(ns, name)}`);
      return run('nsenter', [`--net=${key}`, ...argv], { timeoutMs });
    },
    async remove() {
      // podman rm runs CNI DEL: the agent removes each endpoint, its identity reference and links
      if (started.length) await pm(['rm', '-f', '-t', '0', ...started]);
      started.length = 0;
      netns.clear();
    },
  };
}
