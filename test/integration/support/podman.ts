/**
 * Rootful podman for tests, fenced off from the machine: it runs inside the stand-in host
 * namespace (nsenter --net: podman keeps the host's mounts and cgroups, as `ip netns exec` would
 * not), with its own storage (--root/--runroot under the test dir), its own containers.conf
 * (CONTAINERS_CONF: network_backend "cni", the plugin dir holding only membrane-cni and the
 * loopback plugin, the network config dir with our conflist) and its own storage.conf — the
 * machine's podman and CNI configuration are never read or changed. The image is a busybox-static
 * rootfs imported with `podman import`: nothing is pulled.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile, symlink, rm, copyFile, chmod } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type RunResult } from './lab.ts';
import { CNI_PLUGIN } from './host-mode.ts';

export const IMAGE = 'localhost/membrane-test/busybox:1';

export interface PodmanEnv {
  dir: string;
  hostNetns: string;
  agentSocket: string;
}

export function createPodman(o: PodmanEnv) {
  const root = join(o.dir, 'storage');
  const runroot = join(o.dir, 'run');
  const confFile = join(o.dir, 'containers.conf');
  const storageConf = join(o.dir, 'storage.conf');
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: o.dir,
    CONTAINERS_CONF: confFile, CONTAINERS_STORAGE_CONF: storageConf, CONTAINERS_REGISTRIES_CONF: join(o.dir, 'registries.conf'),
    XDG_RUNTIME_DIR: join(o.dir, 'xdg'), XDG_CONFIG_HOME: join(o.dir, 'xdg-config'), XDG_DATA_HOME: join(o.dir, 'xdg-data'),
  };

  function run(args: string[], opts: { cniArgs?: string; timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
    return new Promise((res) => {
      const c = execFile('nsenter', [`--net=/run/netns/${o.hostNetns}`, 'podman', '--root', root, '--runroot', runroot, '--storage-driver', 'vfs', ...args], {
        env: { ...env, ...(opts.cniArgs ? { CNI_ARGS: opts.cniArgs } : {}) }, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 16 << 20,
      }, (err, stdout, stderr) => {
        res({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
      });
      if (opts.input !== undefined) c.stdin!.end(opts.input);
    });
  }

  async function ok(args: string[], opts: { cniArgs?: string; timeoutMs?: number } = {}): Promise<string> {
    const r = await run(args, opts);
    if (r.code !== 0) throw new Error(`podman ${args.join(' ')} failed (${r.code}):\n${r.stderr}\n${r.stdout}`);
    return r.stdout;
  }

  async function setup(): Promise<void> {
    const bin = join(o.dir, 'cni-bin');
    const netd = join(o.dir, 'net.d');
    for (const d of [bin, netd, join(o.dir, 'tmp'), join(o.dir, 'xdg'), join(o.dir, 'xdg-config'), join(o.dir, 'xdg-data'), join(o.dir, 'libpod'), join(o.dir, 'volumes')]) await mkdir(d, { recursive: true, mode: 0o700 });
    await symlink(CNI_PLUGIN, join(bin, 'membrane-cni'));
    // podman's CNI backend runs the loopback plugin for lo
    if (existsSync('/usr/lib/cni/loopback')) await symlink('/usr/lib/cni/loopback', join(bin, 'loopback'));
    await writeFile(join(netd, 'membrane.conflist'), JSON.stringify({
      cniVersion: '1.0.0', name: 'membrane',
      plugins: [{ type: 'membrane-cni', agentSocket: o.agentSocket, timeoutMs: 120_000 }],
    }, null, 1));
    await writeFile(confFile, [
      '[containers]', 'netns = "bridge"', 'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]', 'log_driver = "k8s-file"', 'default_sysctls = []',
      '[network]', 'network_backend = "cni"', `cni_plugin_dirs = ["${bin}"]`, `network_config_dir = "${netd}"`, 'default_network = "membrane"',
      '[engine]', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', `events_logfile_path = "${join(o.dir, 'events.log')}"`,
      'runtime = "runc"', `tmp_dir = "${join(o.dir, 'tmp')}"`, `static_dir = "${join(o.dir, 'libpod')}"`, `volume_path = "${join(o.dir, 'volumes')}"`,
      'no_pivot_root = false', '',
    ].join('\n'));
    await writeFile(storageConf, ['[storage]', 'driver = "vfs"', `graphroot = "${root}"`, `runroot = "${runroot}"`, ''].join('\n'));
    await writeFile(join(o.dir, 'registries.conf'), 'unqualified-search-registries = []\n');
    await buildImage();
  }

  /** busybox-static as /bin/busybox with its applets linked, imported as IMAGE (offline). */
  async function buildImage(): Promise<void> {
    const rootfs = join(o.dir, 'rootfs');
    await mkdir(join(rootfs, 'bin'), { recursive: true });
    for (const d of ['etc', 'tmp', 'www', 'proc', 'sys', 'dev']) await mkdir(join(rootfs, d), { recursive: true });
    await copyFile('/bin/busybox', join(rootfs, 'bin/busybox'));
    await chmod(join(rootfs, 'bin/busybox'), 0o755);
    for (const a of ['sh', 'httpd', 'wget', 'nslookup', 'sleep', 'ping', 'nc', 'cat', 'echo', 'ls']) await symlink('busybox', join(rootfs, 'bin', a));
    await writeFile(join(rootfs, 'www/index.html'), 'membrane-web-ok\n');
    await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/:/bin/sh\n');
    await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\n');
    const tar = join(o.dir, 'rootfs.tar');
    await new Promise<void>((res, rej) => execFile('tar', ['-C', rootfs, '-cf', tar, '.'], (e) => (e ? rej(e) : res())));
    await ok(['import', '--change', 'CMD ["/bin/sh"]', tar, IMAGE]);
  }

  /** Removes every container and the storage (podman's own `system reset` on this root only). */
  async function teardown(): Promise<void> {
    await run(['rm', '-a', '-f', '-t', '0'], { timeoutMs: 120_000 });
    await run(['system', 'reset', '-f'], { timeoutMs: 120_000 });
    // vfs layers may hold read-only dirs; rm -rf as root removes them
    await rm(root, { recursive: true, force: true });
    await rm(runroot, { recursive: true, force: true });
  }

  return { run, ok, setup, teardown, env };
}
export type Podman = ReturnType<typeof createPodman>;
