/**
 * Raw frames for the datapath's attack and fuzz tests: builders for Ethernet (VLAN tags), IPv4
 * (options, fragments, bad checksums and lengths), TCP, UDP and ICMP; a parser for captured
 * frames; and the `dist/rawpkt` helper (test/integration/support/rawpkt.c) that sends frames
 * with AF_PACKET and captures what arrives. Commands run in a namespace through `nsenter --net`
 * (a lab pod's or the lab's world namespace, or a test topology's).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const RAWPKT = `${REPO}dist/rawpkt`;
const RAWPKT_SRC = `${REPO}test/integration/support/rawpkt.c`;

/** Builds dist/rawpkt when missing or older than its source (scripts/setup.sh builds it too). */
export function ensureRawpkt(): string {
  if (!existsSync(RAWPKT) || statSync(RAWPKT).mtimeMs < statSync(RAWPKT_SRC).mtimeMs) {
    execFileSync('cc', ['-O2', '-Wall', '-o', RAWPKT, RAWPKT_SRC]);
  }
  return RAWPKT;
}

// ------------------------------------------------------------------ builders

export const ETH_IP = 0x0800;
export const ETH_ARP = 0x0806;
export const ETH_IPV6 = 0x86dd;
export const TPID_8021Q = 0x8100;
export const TPID_8021AD = 0x88a8;
export const TCP = 6;
export const UDP = 17;
export const ICMP = 1;
export const SYN = 0x02;
export const ACK = 0x10;
export const RST = 0x04;

export function mac(s: string): Buffer {
  return Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
}

export function ip4(s: string): Buffer {
  return Buffer.from(s.split('.').map(Number));
}

/** Ones' complement checksum (RFC 1071). */
export function csum(...parts: Buffer[]): number {
  let sum = 0;
  for (const b of parts) {
    for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
    if (b.length % 2) sum += b[b.length - 1]! << 8;
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface EthOpts { dst: string; src: string; type: number; tags?: { tpid: number; vid: number }[] }

export function eth(o: EthOpts, payload: Buffer): Buffer {
  const tags = o.tags ?? [];
  const h = Buffer.alloc(14 + 4 * tags.length);
  mac(o.dst).copy(h, 0);
  mac(o.src).copy(h, 6);
  let off = 12;
  for (const t of tags) {
    h.writeUInt16BE(t.tpid, off);
    h.writeUInt16BE(t.vid & 0xfff, off + 2);
    off += 4;
  }
  h.writeUInt16BE(o.type, off);
  return Buffer.concat([h, payload]);
}

export interface Ip4Opts {
  src: string; dst: string; proto: number;
  id?: number; ttl?: number; df?: boolean; mf?: boolean;
  /** fragment offset in bytes (a multiple of 8) */
  fragOffset?: number;
  options?: Buffer;
  /** overrides for malformed packets */
  badChecksum?: boolean; totalLength?: number; version?: number; ihl?: number; reservedBit?: boolean;
}

export function ipv4(o: Ip4Opts, payload: Buffer): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const hl = 20 + opts.length;
  if (hl % 4) throw new Error('IPv4 options must pad to 4 bytes');
  const h = Buffer.alloc(hl);
  h[0] = ((o.version ?? 4) << 4) | (o.ihl ?? hl / 4);
  h.writeUInt16BE(o.totalLength ?? hl + payload.length, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  const fo = ((o.fragOffset ?? 0) / 8) | (o.mf ? 0x2000 : 0) | (o.df ? 0x4000 : 0) | (o.reservedBit ? 0x8000 : 0);
  h.writeUInt16BE(fo, 6);
  h[8] = o.ttl ?? 64;
  h[9] = o.proto;
  ip4(o.src).copy(h, 12);
  ip4(o.dst).copy(h, 16);
  opts.copy(h, 20);
  const c = csum(h);
  h.writeUInt16BE(o.badChecksum ? c ^ 0x5a5a : c, 10);
  return Buffer.concat([h, payload]);
}

function pseudo(src: string, dst: string, proto: number, len: number): Buffer {
  const p = Buffer.alloc(12);
  ip4(src).copy(p, 0);
  ip4(dst).copy(p, 4);
  p[9] = proto;
  p.writeUInt16BE(len, 10);
  return p;
}

export interface TcpOpts { src: string; dst: string; sport: number; dport: number; flags: number; seq?: number; ack?: number; window?: number; doff?: number }

export function tcp(o: TcpOpts, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt32BE((o.seq ?? 1000) >>> 0, 4);
  h.writeUInt32BE((o.ack ?? 0) >>> 0, 8);
  h[12] = (o.doff ?? 5) << 4;
  h[13] = o.flags;
  h.writeUInt16BE(o.window ?? 64240, 14);
  const seg = Buffer.concat([h, payload]);
  seg.writeUInt16BE(csum(pseudo(o.src, o.dst, TCP, seg.length), seg), 16);
  return seg;
}

export interface UdpOpts { src: string; dst: string; sport: number; dport: number; length?: number }

export function udp(o: UdpOpts, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt16BE(o.length ?? 8 + payload.length, 4);
  const seg = Buffer.concat([h, payload]);
  seg.writeUInt16BE(csum(pseudo(o.src, o.dst, UDP, seg.length), seg) || 0xffff, 6);
  return seg;
}

/** ICMP message: type, code, 4 bytes of "rest of header" (echo id/seq), payload. */
export function icmp(type: number, code: number, rest: Buffer, payload: Buffer): Buffer {
  const m = Buffer.concat([Buffer.from([type, code, 0, 0]), rest.subarray(0, 4), payload]);
  m.writeUInt16BE(csum(m), 2);
  return m;
}

export function echoRequest(id: number, seq: number, payload = Buffer.alloc(16)): Buffer {
  const r = Buffer.alloc(4);
  r.writeUInt16BE(id, 0);
  r.writeUInt16BE(seq, 2);
  return icmp(8, 0, r, payload);
}

/** An ICMP error (type 3 code 3 by default) quoting `quoted` (an IPv4 packet, header and data). */
export function icmpError(quoted: Buffer, type = 3, code = 3, extra?: Buffer): Buffer {
  const ihl = (quoted[0]! & 0x0f) * 4;
  return icmp(type, code, Buffer.alloc(4), Buffer.concat([quoted.subarray(0, ihl + 8), extra ?? Buffer.alloc(0)]));
}

// ------------------------------------------------------------------ parsing captures

export interface Parsed {
  dir: 'in' | 'out';
  ethertype: number;
  ip?: { src: string; dst: string; proto: number; id: number; fragOffset: number; mf: boolean };
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  icmpType?: number;
  icmpCode?: number;
  hex: string;
}

const fmt4 = (b: Buffer, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

/** Parses a captured frame ("in|out HEX"); VLAN tags in the frame are skipped. */
export function parseFrame(line: string): Parsed | undefined {
  const [dir, hex] = line.trim().split(' ');
  if ((dir !== 'in' && dir !== 'out') || !hex) return undefined;
  const b = Buffer.from(hex, 'hex');
  if (b.length < 14) return undefined;
  let off = 12;
  let type = b.readUInt16BE(off);
  while ((type === TPID_8021Q || type === TPID_8021AD) && b.length >= off + 6) {
    off += 4;
    type = b.readUInt16BE(off);
  }
  const p: Parsed = { dir, ethertype: type, hex };
  const l3 = off + 2;
  if (type !== ETH_IP || b.length < l3 + 20) return p;
  const ihl = (b[l3]! & 0x0f) * 4;
  const fo = b.readUInt16BE(l3 + 6);
  p.ip = { src: fmt4(b, l3 + 12), dst: fmt4(b, l3 + 16), proto: b[l3 + 9]!, id: b.readUInt16BE(l3 + 4), fragOffset: (fo & 0x1fff) * 8, mf: (fo & 0x2000) !== 0 };
  const l4 = l3 + ihl;
  if (p.ip.fragOffset || b.length < l4 + 4) return p;
  if (p.ip.proto === TCP || p.ip.proto === UDP) {
    p.sport = b.readUInt16BE(l4);
    p.dport = b.readUInt16BE(l4 + 2);
    if (p.ip.proto === TCP && b.length >= l4 + 14) p.tcpFlags = b[l4 + 13];
  } else if (p.ip.proto === ICMP) {
    p.icmpType = b[l4];
    p.icmpCode = b[l4 + 1];
  }
  return p;
}

// ------------------------------------------------------------------ running rawpkt in a namespace

const nsArgs = (netns: string) => [`--net=/run/netns/${netns}`];

/** Sends frames on `iface` inside network namespace `netns`; returns how many were sent. */
export function sendFrames(netns: string, iface: string, frames: Buffer[]): number {
  const out = execFileSync('nsenter', [...nsArgs(netns), ensureRawpkt(), 'send', iface], { input: frames.map((f) => f.toString('hex')).join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 20 });
  return Number(out.trim());
}

/**
 * `count` copies of `frame` with the 16-bit field at `offset` stepping from 1024 (source ports),
 * each sent `repeat` times in a row; returns how many frames were sent.
 */
export function floodFrames(netns: string, iface: string, frame: Buffer, count: number, offset: number, repeat = 1): number {
  const out = execFileSync('nsenter', [...nsArgs(netns), ensureRawpkt(), 'flood', iface, frame.toString('hex'), String(count), String(offset), String(repeat)], { encoding: 'utf8', timeout: 120_000 });
  return Number(out.trim());
}

export interface Capture {
  stop(): Promise<Parsed[]>;
  /** The first frame (seen so far or later) matching `pred`, or undefined after `ms`. */
  waitFor(pred: (f: Parsed) => boolean, ms: number): Promise<Parsed | undefined>;
  proc: ChildProcess;
}

/** Starts a capture on `iface` in `netns` (for at most `ms`); resolves once it is listening. */
export async function startCapture(netns: string, iface: string, ms: number): Promise<Capture> {
  const proc = spawn('nsenter', [...nsArgs(netns), ensureRawpkt(), 'capture', iface, String(ms)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const frames: Parsed[] = [];
  const waiters = new Set<(f: Parsed) => void>();
  let buf = '';
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const done = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const l of lines) {
      if (l === 'ready') ready();
      else {
        const p = parseFrame(l);
        if (p) {
          frames.push(p);
          for (const w of waiters) w(p);
        }
      }
    }
  });
  await Promise.race([isReady, done]);
  return {
    proc,
    waitFor(pred, ms) {
      const hit = frames.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve) => {
        const w = (f: Parsed) => { if (pred(f)) { clearTimeout(t); waiters.delete(w); resolve(f); } };
        const t = setTimeout(() => { waiters.delete(w); resolve(undefined); }, ms);
        waiters.add(w);
        void done.then(() => { clearTimeout(t); waiters.delete(w); resolve(undefined); });
      });
    },
    async stop() {
      if (proc.exitCode === null && proc.pid) {
        try { process.kill(proc.pid, 'SIGTERM'); } catch { /* gone */ }
      }
      await done;
      return frames;
    },
  };
}

/** Runs `fn` with a capture on `iface` in `netns`; returns the frames seen by `settleMs` after it. */
export async function capturedAt(netns: string, iface: string, fn: () => unknown, settleMs = 500): Promise<Parsed[]> {
  const cap = await startCapture(netns, iface, 60_000);
  try {
    await fn();
    await new Promise((r) => setTimeout(r, settleMs));
  } catch (e) {
    await cap.stop();
    throw e;
  }
  return cap.stop();
}

/** A captured Ethernet frame (untagged) with VLAN tags inserted after the MAC addresses. */
export function retag(hex: string, tags: { tpid: number; vid: number }[]): Buffer {
  const b = Buffer.from(hex, 'hex');
  const t = Buffer.alloc(4 * tags.length);
  tags.forEach((g, i) => { t.writeUInt16BE(g.tpid, 4 * i); t.writeUInt16BE(g.vid & 0xfff, 4 * i + 2); });
  return Buffer.concat([b.subarray(0, 12), t, b.subarray(12)]);
}

/** Interface MAC address inside a namespace. */
export function ifaceMac(netns: string, iface: string): string {
  const j = JSON.parse(execFileSync('ip', ['-j', '-n', netns, 'link', 'show', iface], { encoding: 'utf8' })) as { address: string }[];
  return j[0]!.address;
}

/** The MAC a namespace's neighbour entry holds for `ip` (after some traffic resolved it). */
export function neighMac(netns: string, ip: string, dev = 'eth0'): string | undefined {
  const j = JSON.parse(execFileSync('ip', ['-j', '-n', netns, 'neigh', 'show', ip, 'dev', dev], { encoding: 'utf8' }) || '[]') as { lladdr?: string }[];
  return j.find((n) => n.lladdr)?.lladdr;
}
