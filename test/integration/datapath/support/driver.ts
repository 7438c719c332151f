// Test driver: runs a LinuxDatapath inside the node namespace (spawned with nsenter --net) and
// serves JSON-line RPC on stdin/stdout: {"id":1,"m":"upsertEndpoint","a":[...]} -> {"id":1,"r":...}.
// Events are buffered and returned by "events". BigInts are sent as strings.
import { createInterface } from 'node:readline';
import { createServer, Socket, type Server } from 'node:net';
import { transparentUpstreamSocket } from '../../../../src/sys/proxy-socket.ts';
import { setIpTransparent } from '../../../../src/sys/sockopt.ts';
import { ensureProxyRouting } from '../../../../src/sys/proxy-routing.ts';
import { createLinuxDatapath, type LinuxDatapathOptions } from '../../../../src/datapath/linux/index.ts';
import { copyEvent, type DatapathEvent } from '../../../../src/datapath/types.ts';
import type { MapStateKey, MapStateEntry } from '../../../../src/policy/types.ts';

const pinRoot = process.argv[2]!;
/** optional JSON LinuxDatapathOptions (e.g. {"eventRate":{"perSecond":0,"burst":0}}) */
const extra = process.argv[3] ? JSON.parse(process.argv[3]) as Partial<LinuxDatapathOptions> : {};
// the kernel's run-time stats on unless the options say otherwise: the datapath tests and
// bench/datapath read each program's runs and time (the agent leaves them off by default)
const dp = createLinuxDatapath({ runTimeStats: true, ...extra, pinRoot });
const events: DatapathEvent[] = [];
let unsub: (() => void) | null = null;
const proxies: Server[] = [];

/**
 * A minimal "L7 proxy": a transparent listener that answers with the original destination it saw
 * and closes, or (echo) keeps the connection and echoes every byte.
 */
function proxyListen(port: number, slot: number, echo = false, host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer((s) => {
      s.on('error', () => {});
      if (echo) s.pipe(s);
      else s.end(`proxied ${s.localAddress}:${s.localPort}\n`);
    });
    srv.on('error', reject);
    srv.listen({ port, host, ipv6Only: host.includes(':') }, () => {
      const fd = (srv as unknown as { _handle: { fd: number } })._handle.fd;
      setIpTransparent(fd);
      dp.setProxyListener(slot, fd);
      proxies.push(srv);
      resolve(fd);
    });
  });
}

/** An L7 proxy's upstream connection: bound (IP_TRANSPARENT) to a pod's address with SO_MARK; true if an echo round trip works. */
function upstreamEcho(srcIp: string, mark: number, ip: string, port: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket({ fd: transparentUpstreamSocket(srcIp, mark), readable: true, writable: true });
    const t = setTimeout(() => { s.destroy(); resolve(false); }, timeoutMs);
    s.on('error', () => { clearTimeout(t); s.destroy(); resolve(false); });
    s.connect(port, ip, () => s.write('ping\n'));
    s.once('data', () => { clearTimeout(t); s.destroy(); resolve(true); });
  });
}

type WireEntry = { key: MapStateKey; entry: Partial<MapStateEntry> & Pick<MapStateEntry, 'verdict'> };
const fix = (es: WireEntry[]): { key: MapStateKey; entry: MapStateEntry }[] => es.map((e) => ({ key: e.key, entry: { l7: null, authType: 0, matchType: 0, origins: [], ...e.entry } }));

const methods: Record<string, (...a: any[]) => unknown> = {
  start: async (subscribe = true) => { await dp.start(); if (subscribe) unsub = dp.onEvent((e) => events.push(copyEvent(e))); return true; },
  stop: async () => { unsub?.(); await dp.stop(); return true; },
  upsertEndpoint: (ep) => dp.upsertEndpoint(ep),
  removeEndpoint: (id) => dp.removeEndpoint(id),
  applyFull: (id: number, entries: WireEntry[], defaultDeny: { ingress: boolean; egress: boolean }) => {
    const full = { entries: new Map(fix(entries).map((e, i) => [String(i), e])), defaultDeny };
    return dp.applyPolicy(id, { upserts: [], deletes: [], defaultDenyChanged: true, defaultDeny }, full);
  },
  applyDelta: (id: number, upserts: WireEntry[], deletes: MapStateKey[], defaultDeny?: { ingress: boolean; egress: boolean }) =>
    dp.applyPolicy(id, { upserts: fix(upserts), deletes, defaultDenyChanged: !!defaultDeny, ...(defaultDeny ? { defaultDeny } : {}) }),
  upsertIPCache: (entries) => dp.upsertIPCache(entries),
  deleteIPCache: (p) => dp.deleteIPCache(p),
  events: async (waitMs = 300) => { await new Promise((r) => setTimeout(r, waitMs)); return events.splice(0); },
  mute: () => { unsub?.(); unsub = null; events.length = 0; return true; },
  stats: () => dp.stats(),
  counters: () => dp.counters(),
  conntrack: () => dp.conntrack(),
  fragments: () => dp.fragments(),
  ctTable: (index: number) => dp.ctTable(index),
  policyRevision: () => dp.policyRevision(),
  eventsLost: () => dp.eventsLost(),
  eventsLostBySender: () => Object.fromEntries(dp.eventsLostBySender()),
  policyDump: (id) => dp.policyDump(id),
  ipcacheDump: () => dp.ipcacheDump(),
  proxyListen: (port, slot, echo, host) => proxyListen(port, slot, echo, host),
  attachNetworkDevice: (ifname, o) => dp.attachNetworkDevice(ifname, o ?? {}),
  attachOverlayDevice: (ifname) => dp.attachOverlayDevice(ifname),
  proxyRouting: (ipv6) => ensureProxyRouting({ ipv6: ipv6 === true }),
  upstreamEcho: (src, mark, ip, port) => upstreamEcho(src, mark, ip, port),
  upsertService: (svc) => dp.upsertService(svc),
  deleteService: (key) => dp.deleteService(key),
  serviceDump: () => dp.serviceDump(),
  proxyClose: (slot) => { dp.setProxyListener(slot, null); for (const p of proxies.splice(0)) p.close(); return true; },
  exit: async () => { setTimeout(() => process.exit(0), 10); return true; },
};

const rl = createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const msg = JSON.parse(line) as { id: number; m: string; a: unknown[] };
  try {
    const fn = methods[msg.m];
    if (!fn) throw new Error(`no method ${msg.m}`);
    const r = await fn(...(msg.a ?? []));
    process.stdout.write(JSON.stringify({ id: msg.id, r: r ?? null }, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
  } catch (e) {
    const err = e as { code?: string; message?: string };
    process.stdout.write(JSON.stringify({ id: msg.id, e: `${err.code ?? ''} ${err.message ?? String(e)}` }) + '\n');
  }
});
rl.on('close', () => process.exit(0));
