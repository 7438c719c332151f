/**
 * bench/ui/replay-server.ts: what the page's replay costs the server side alone. An Observer
 * (src/hubble/observer.ts, or another checkout's with --ab DIR) serves a ring of 10,000 flows
 * like bench/ui's (xwing -> deathstar UDP, a policy verdict and a drop each, built by the real
 * flow builder) from a child process; this process asks for the last 10,000 with the UI's field
 * mask over gRPC (the UI server relays the bytes as they are) and reads the frames without
 * decoding them. Reported: wall time per replay and the server process's CPU time per replay
 * (process.cpuUsage in the child: what contention does not add), median of --rounds.
 *
 *   bin/node bench/ui/replay-server.ts [--rounds 7] [--ab DIR]
 */
import { fork, type ChildProcess } from 'node:child_process';
import http2 from 'node:http2';
import { connect as netConnect } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { create, toBinary } from '@bufbuild/protobuf';
import { GetFlowsRequestSchema } from '../../src/hubble/gen/observer/observer_pb.js';

const FLOWS = 10_000;
const RING = 16383;
// the UI's mask (ui/src/flow-worker.ts FLOW_FIELDS; that file runs in a browser worker)
const FLOW_FIELDS = [
  'time', 'uuid', 'verdict', 'drop_reason', 'drop_reason_desc', 'auth_type', 'IP', 'l4', 'source', 'destination', 'Type',
  'node_name', 'source_names', 'destination_names', 'l7', 'event_type', 'source_service', 'destination_service',
  'traffic_direction', 'policy_match_type', 'debug_capture_point', 'sock_xlate_point', 'is_reply', 'Summary', 'ip_trace_id',
  'extensions',
];

async function serve(srcDir: string, socketPath: string): Promise<void> {
  const { FlowRing } = await import(join(srcDir, 'hubble/ring.ts')) as typeof import('../../src/hubble/ring.ts');
  const { createHubbleServer } = await import(join(srcDir, 'hubble/observer.ts')) as typeof import('../../src/hubble/observer.ts');
  const { createFlowBuilder } = await import(join(srcDir, 'hubble/flow.ts')) as typeof import('../../src/hubble/flow.ts');
  const xwing = { id: 103, identity: 34567, namespace: 'default', pod: 'xwing', labels: ['k8s:class=xwing', 'k8s:org=alliance', 'k8s:io.kubernetes.pod.namespace=default', 'k8s:app.kubernetes.io/name=xwing'] };
  const deathstar = { id: 104, identity: 45678, namespace: 'default', pod: 'deathstar-6c94dcc57b-x7q2n', labels: ['k8s:class=deathstar', 'k8s:org=empire', 'k8s:io.kubernetes.pod.namespace=default', 'k8s:app.kubernetes.io/name=deathstar'], workloads: [{ name: 'deathstar', kind: 'Deployment' }] };
  const byIp: Record<string, typeof xwing> = { '10.244.1.7': xwing, '10.244.1.9': deathstar };
  const build = createFlowBuilder({ nodeName: 'node1', resolver: { byIp: (ip: string) => byIp[ip], identityLabels: () => undefined, namesForIp: () => undefined } as never });
  const ring = new FlowRing(RING);
  const t0 = BigInt(Date.now() - 60_000) * 1_000_000n;
  for (let i = 0; i < FLOWS; i++) {
    const verdict = i % 2 === 0;
    const ev = {
      type: verdict ? 5 : 1, subType: verdict ? 0 : 133, timeNs: t0 + BigInt(i) * 1_000_000n, endpointId: 104, ifindex: 7, srcIdentity: 34567, dstIdentity: 45678,
      ipVersion: 4, srcIp: '10.244.1.7', dstIp: '10.244.1.9', proto: 17, srcPort: 40000 + (i % 1000), dstPort: 9, tcpFlags: 0, icmpType: 0, icmpCode: 0,
      ctReason: 0, direction: 'ingress', verdict: verdict ? -133 : 0, matchType: 0, authType: 0, length: 45,
    };
    const f = build(ev as never);
    if (!f) throw new Error('the flow builder made no flow of the bench event');
    const t = f.time!;
    ring.pushFlow(f, Number(t.seconds) * 1000 + t.nanos / 1e6);
  }
  const server = createHubbleServer({ socketPath, ring, nodeName: 'node1', version: 'bench', startedAt: Date.now(), seenFlows: () => FLOWS });
  await server.start();
  process.on('message', (m: string) => {
    if (m === 'cpu') process.send!(process.cpuUsage());
    if (m === 'stop') void server.stop().then(() => process.exit(0));
  });
  process.send!('ready');
}

async function replay(socketPath: string): Promise<{ ms: number; bytes: number; frames: number }> {
  const s = http2.connect('http://localhost', { createConnection: () => netConnect(socketPath) });
  try {
    const msg = toBinary(GetFlowsRequestSchema, create(GetFlowsRequestSchema, { number: BigInt(FLOWS), fieldMask: { paths: FLOW_FIELDS } }));
    const body = Buffer.alloc(5 + msg.length);
    body.writeUInt32BE(msg.length, 1);
    body.set(msg, 5);
    const t0 = performance.now();
    const st = s.request({ ':method': 'POST', ':path': '/observer.Observer/GetFlows', 'content-type': 'application/grpc+proto', te: 'trailers' });
    st.end(body);
    let bytes = 0;
    let frames = 0;
    let pending = 0; // bytes left in the current frame
    let header: number[] = [];
    await new Promise<void>((res, rej) => {
      st.on('data', (c: Buffer) => {
        bytes += c.length;
        for (let i = 0; i < c.length;) {
          if (pending === 0) {
            header.push(c[i++]!);
            if (header.length === 5) {
              pending = Buffer.from(header).readUInt32BE(1);
              header = [];
              frames++;
            }
          } else {
            const n = Math.min(pending, c.length - i);
            pending -= n;
            i += n;
          }
        }
      });
      st.on('trailers', (t) => (t['grpc-status'] === '0' ? undefined : rej(new Error(`grpc-status ${t['grpc-status']}: ${t['grpc-message']}`))));
      st.on('end', () => res());
      st.on('error', rej);
    });
    return { ms: performance.now() - t0, bytes, frames };
  } finally {
    s.close();
  }
}

async function measure(srcDir: string, rounds: number): Promise<{ ms: number[]; cpu: number[]; bytes: number; frames: number }> {
  const dir = mkdtempSync(join(os.tmpdir(), 'mb-replay-'));
  const sock = join(dir, 'hubble.sock');
  const child: ChildProcess = fork(import.meta.filename, ['--serve', srcDir, sock], { execArgv: process.execArgv });
  const ask = <T>(m: string) => new Promise<T>((res) => child.once('message', (x) => res(x as T)).send(m));
  try {
    await new Promise<void>((res, rej) => { child.once('message', () => res()); child.once('exit', (c) => rej(new Error(`server exited ${c}`))); });
    const ms: number[] = [];
    const cpu: number[] = [];
    let last = { bytes: 0, frames: 0 };
    for (let i = 0; i < rounds; i++) {
      const c0 = await ask<NodeJS.CpuUsage>('cpu');
      const r = await replay(sock);
      const c1 = await ask<NodeJS.CpuUsage>('cpu');
      ms.push(r.ms);
      cpu.push((c1.user - c0.user + c1.system - c0.system) / 1000);
      last = { bytes: r.bytes, frames: r.frames };
    }
    return { ms, cpu, ...last };
  } finally {
    child.send('stop');
    await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--serve') {
  await serve(process.argv[3]!, process.argv[4]!);
} else {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '7' }, ab: { type: 'string' } } });
  const rounds = Math.max(1, Math.min(50, Number(values.rounds)));
  const builds = [{ name: 'src', dir: resolve(import.meta.dirname, '../../src') }, ...(values.ab ? [{ name: values.ab, dir: resolve(values.ab, 'src') }] : [])];
  const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const lines = [
    `Command: \`bin/node bench/ui/replay-server.ts --rounds ${rounds}${values.ab ? ` --ab ${values.ab}` : ''}\``,
    '',
    `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC (load average at start ${load}), Node ${process.version}. An Observer in its own process serves a ring of ${FLOWS} flows (UDP policy verdict + drop, built by the flow builder) over gRPC on a unix socket; the client asks for the last ${FLOWS} with the UI's field mask and reads the frames without decoding.${builds.length > 1 ? ` Builds measured in turn: ${builds.map((b) => b.name).join(' then ')}.` : ''}`,
    '',
    '| build | replay wall, median (runs) | server CPU per replay, median (runs) | bytes / frames |',
    '|---|---|---|---|',
  ];
  for (const b of builds) {
    const r = await measure(b.dir, rounds);
    lines.push(`| ${b.name} | ${median(r.ms).toFixed(0)} ms (${r.ms.map((x) => x.toFixed(0)).join(', ')}) | ${median(r.cpu).toFixed(0)} ms (${r.cpu.map((x) => x.toFixed(0)).join(', ')}) | ${r.bytes} / ${r.frames} |`);
  }
  lines.push('', `Load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}.`);
  process.stdout.write(lines.join('\n') + '\n');
}
