/**
 * A real etcd (Debian's etcd-server) for one test file: its own temp directory and loopback
 * ports, plain or with TLS (client certificates required), stopped and removed by `stop`.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';

export const ETCD = '/usr/bin/etcd';

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
    s.on('error', rej);
  });
}

export interface TestEtcd {
  endpoint: string;
  dir: string;
  tls?: { ca: Buffer; cert: Buffer; key: Buffer };
  stop(): Promise<void>;
}

function makeCerts(dir: string): void {
  const o = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  o(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=test-etcd-ca']);
  for (const [name, ext] of [['server', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'], ['client', 'extendedKeyUsage=clientAuth']] as const) {
    writeFileSync(join(dir, `${name}.ext`), `${ext}\n`);
    o(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    o(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', `${name}.ext`]);
  }
}

export async function startEtcd(opts: { tls?: boolean } = {}): Promise<TestEtcd> {
  const dir = mkdtempSync(join(tmpdir(), 'membrane-etcd-'));
  const [cp, pp] = [await freePort(), await freePort()];
  const scheme = opts.tls ? 'https' : 'http';
  if (opts.tls) makeCerts(dir);
  const args = [
    '--name=t', `--data-dir=${join(dir, 'data')}`,
    `--listen-client-urls=${scheme}://127.0.0.1:${cp}`, `--advertise-client-urls=${scheme}://127.0.0.1:${cp}`,
    `--listen-peer-urls=http://127.0.0.1:${pp}`, `--initial-advertise-peer-urls=http://127.0.0.1:${pp}`, `--initial-cluster=t=http://127.0.0.1:${pp}`,
    '--logger=zap', '--log-outputs=stderr',
    ...(opts.tls ? ['--cert-file=server.crt', '--key-file=server.key', '--client-cert-auth', '--trusted-ca-file=ca.crt'] : []),
  ];
  const child: ChildProcess = spawn(ETCD, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (c: Buffer) => { log += c.toString(); });
  const deadline = Date.now() + 20_000;
  while (!log.includes('serving client traffic')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`etcd did not start:\n${log.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const tls = opts.tls ? { ca: readFileSync(join(dir, 'ca.crt')), cert: readFileSync(join(dir, 'client.crt')), key: readFileSync(join(dir, 'client.key')) } : undefined;
  return {
    endpoint: `${scheme}://${opts.tls ? 'localhost' : '127.0.0.1'}:${cp}`, dir, ...(tls ? { tls } : {}),
    async stop() {
      if (child.exitCode === null) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
