/**
 * The attacking client of the HTTP attack tests, run inside a lab pod:
 *
 *   bin/node test/integration/e2e/attack-http-client.ts PLAN.json
 *
 * PLAN: {host, port, tls?: {servername, ca}, connections: Step[][]} — the connections are opened
 * one after the other (same pod, same destination: the proxy's upstream pool is shared between
 * them), each a list of steps (write bytes / wait ms / close). Prints one JSON line: per
 * connection, the bytes received (latin1) and whether the peer closed.
 *
 * Or {websocket: url, messages: string[]}: a real WebSocket client (Node's, RFC 6455) sends the
 * messages once open and prints {opened, received, closeCode} (wss:// trusts NODE_EXTRA_CA_CERTS).
 */
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';

interface Step { write?: string; wait?: number; close?: boolean }
interface Plan {
  host: string;
  port: number;
  tls?: { servername: string; ca: string };
  connections: Step[][];
}
interface WsPlan { websocket: string; messages: string[] }

const plan = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Plan | WsPlan;

function connection(p: Plan, steps: Step[]): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let closed = false;
    let finished = false;
    const s = p.tls
      ? tls.connect({ host: p.host, port: p.port, servername: p.tls.servername, ca: readFileSync(p.tls.ca) })
      : net.connect({ host: p.host, port: p.port });
    const finish = () => {
      if (finished) return;
      finished = true;
      s.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    };
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => { closed = true; });
    s.on('close', () => { closed = true; });
    s.on('error', () => { closed = true; });
    s.once(p.tls ? 'secureConnect' : 'connect', async () => {
      for (const step of steps) {
        if (step.write !== undefined) s.write(Buffer.from(step.write, 'latin1'));
        if (step.wait) await new Promise((r) => setTimeout(r, step.wait));
        if (step.close) break;
      }
      finish();
    });
    setTimeout(finish, 15_000);
  });
}

function websocket(p: WsPlan): Promise<{ opened: boolean; received: string[]; closeCode: number; error?: string }> {
  return new Promise((resolve) => {
    const out = { opened: false, received: [] as string[], closeCode: 0, error: undefined as string | undefined };
    const ws = new WebSocket(p.websocket);
    const timer = setTimeout(() => { ws.close(); resolve(out); }, 10_000);
    ws.onopen = () => { out.opened = true; for (const m of p.messages) ws.send(m); };
    ws.onmessage = (m) => { out.received.push(String(m.data)); if (out.received.length === p.messages.length) ws.close(1000); };
    ws.onerror = () => { out.error = 'error'; };
    ws.onclose = (e) => { clearTimeout(timer); out.closeCode = e.code; resolve(out); };
  });
}

if ('websocket' in plan) {
  console.log(JSON.stringify(await websocket(plan)));
} else {
  const out = [];
  for (const steps of plan.connections) out.push(await connection(plan, steps));
  console.log(JSON.stringify(out));
}
