/**
 * Attack (issue 9, finding 4): revoked policy kept working for warmed-up tuples. The datapath
 * passed any non-new conntrack state before the policy lookup, and created conntrack for SYNs
 * the kernel then dropped (bad IP checksum): an attacker warmed thousands of source ports, and
 * after the policy was tightened `curl --local-port` with a warmed port still got 200, egress
 * and ingress alike. Now conntrack is created only for well-formed, allowed packets, and policy
 * applies to every packet of a connection that is not a reply (as in Cilium): warmed ports and
 * established connections alike are cut when the policy no longer allows them.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { TestLab, REPO, type Flow } from '../support/lab.ts';
import { ETH_IP, TCP, SYN, eth, ipv4, tcp, ensureRawpkt } from '../support/frames.ts';
import { FORBIDDEN as TARGET, cnp, egressTo, ns, pod, podNet, send, type PodNet } from '../support/attack.ts';

const lab = new TestLab(`awt${process.pid % 10000}`);
let atk: PodNet;
let serverIp = '';

before(async () => {
  ensureRawpkt();
  await lab.up();
  await lab.apply([ns('awt'), pod('awt', 'attacker', { app: 'attacker' }), pod('awt', 'server', { app: 'server' })]);
  const ips = await lab.podIPs();
  assert.ok(ips['awt/attacker'] && ips['awt/server']);
  atk = podNet(lab, 'awt', 'attacker', ips['awt/attacker']);
  serverIp = ips['awt/server'];
});
after(async () => { await lab.down(); });

const egressPolicy = (ports: number[]) => cnp('awt', 'attacker-egress', { endpointSelector: { matchLabels: { app: 'attacker' } }, egress: [egressTo(`${TARGET}/32`, ports)] });
const ingressPolicy = (ports: number[]) => cnp('awt', 'server-ingress', {
  endpointSelector: { matchLabels: { app: 'server' } },
  ingress: [{ fromEndpoints: [{ matchLabels: { app: 'attacker' } }], toPorts: [{ ports: ports.map((p) => ({ port: String(p), protocol: 'TCP' })) }] }],
});

async function curl(url: string, localPort?: number): Promise<string> {
  const r = await lab.exec('awt', 'attacker', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '3', ...(localPort ? ['--local-port', String(localPort)] : []), url]);
  return r.stdout.trim();
}

/** Bad-IP-checksum SYNs from ports [from, from+n) to ip:port: the kernel drops them on arrival. */
function warm(ip: string, port: number, from: number, n: number): void {
  const frames: Buffer[] = [];
  for (let sp = from; sp < from + n; sp++) {
    frames.push(eth({ dst: atk.gw, src: atk.mac, type: ETH_IP }, ipv4({ src: atk.ip, dst: ip, proto: TCP, badChecksum: true }, tcp({ src: atk.ip, dst: ip, sport: sp, dport: port, flags: SYN }))));
  }
  assert.equal(send(atk, frames), n);
}

/** A keep-alive HTTP connection with a request every 200 ms; `fails()` resolves when it breaks. */
function holdConnection(ip: string, port: number) {
  const p = lab.spawnIn('awt', 'attacker', ['env', 'HOLD_DURATION_MS=60000', join(REPO, 'bin/node'), join(REPO, 'test/integration/support/hold.ts'), ip, String(port)]);
  let out = '';
  p.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  return {
    async works(): Promise<boolean> {
      for (let i = 0; i < 50 && !/ok 3/.test(out); i++) await new Promise((r) => setTimeout(r, 200));
      return /ok 3/.test(out) && !/fail/.test(out);
    },
    async fails(ms: number): Promise<boolean> {
      for (let i = 0; i < ms / 200 && !/fail/.test(out); i++) await new Promise((r) => setTimeout(r, 200));
      return /fail/.test(out);
    },
    out: () => out,
    kill: () => p.kill('SIGKILL'),
  };
}

async function drops(args: string[], pred: (f: Flow) => boolean): Promise<Flow[]> {
  let fs: Flow[] = [];
  for (let i = 0; i < 20; i++) {
    fs = await lab.flows([...args, '--verdict', 'DROPPED', '--last', '2000']);
    if (fs.some(pred)) return fs;
    await new Promise((r) => setTimeout(r, 250));
  }
  return fs;
}

test('egress: after the policy drops port 8080, warmed source ports and established connections to it are cut', async () => {
  await lab.apply([egressPolicy([80, 8080])]);
  assert.equal(await curl(`http://${TARGET}:8080/`), '200', 'positive control: 8080 allowed');
  warm(TARGET, 8080, 40000, 200);
  const hold = holdConnection(TARGET, 8080);
  try {
    assert.equal(await hold.works(), true, `an established connection: ${hold.out()}`);
    const since = new Date();
    await lab.apply([egressPolicy([80])]);
    assert.equal(await curl(`http://${TARGET}:8080/`, 40123), '000', 'a warmed source port does not get through');
    assert.equal(await curl(`http://${TARGET}:8080/`, 40017), '000', 'nor another one');
    assert.equal(await hold.fails(6000), true, `the established connection is cut: ${hold.out()}`);
    assert.equal(await curl(`http://${TARGET}:80/`), '200', 'positive control: port 80 still allowed');
    const fs = await drops(['--from-pod', 'awt/attacker', '--since', since.toISOString()], (f) => f.l4?.TCP?.destination_port === 8080);
    const d = fs.find((f) => f.l4?.TCP?.destination_port === 8080 && f.IP?.destination === TARGET);
    assert.ok(d, `DROPPED flows for 8080: ${JSON.stringify(fs.slice(-3))}`);
    assert.deepEqual([d.drop_reason_desc, d.traffic_direction], ['POLICY_DENIED', 'EGRESS']);
  } finally {
    hold.kill();
    await lab.delete([egressPolicy([80])]);
  }
});

test('ingress: after the server\'s policy drops port 8080, warmed source ports and established connections to it are cut', async () => {
  await lab.apply([ingressPolicy([8080, 9090])]);
  assert.equal(await curl(`http://${serverIp}:8080/`), '200', 'positive control: 8080 allowed');
  warm(serverIp, 8080, 41000, 200);
  const hold = holdConnection(serverIp, 8080);
  try {
    assert.equal(await hold.works(), true, `an established connection: ${hold.out()}`);
    const since = new Date();
    await lab.apply([ingressPolicy([9090])]);
    assert.equal(await curl(`http://${serverIp}:8080/`, 41123), '000', 'a warmed source port does not get through');
    assert.equal(await curl(`http://${serverIp}:8080/`, 41017), '000', 'nor another one');
    assert.equal(await hold.fails(6000), true, `the established connection is cut: ${hold.out()}`);
    const fs = await drops(['--to-pod', 'awt/server', '--since', since.toISOString()], (f) => f.l4?.TCP?.destination_port === 8080);
    const d = fs.find((f) => f.l4?.TCP?.destination_port === 8080 && f.IP?.source === atk.ip);
    assert.ok(d, `DROPPED flows for 8080: ${JSON.stringify(fs.slice(-3))}`);
    assert.deepEqual([d.drop_reason_desc, d.traffic_direction, d.destination?.pod_name], ['POLICY_DENIED', 'INGRESS', 'server']);
    await lab.apply([ingressPolicy([8080])]);
    assert.equal(await curl(`http://${serverIp}:8080/`), '200', 'positive control: allowed again, connections work again');
  } finally {
    hold.kill();
    await lab.delete([ingressPolicy([8080])]);
  }
});
