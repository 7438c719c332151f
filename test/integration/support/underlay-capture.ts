/**
 * A packet capture on the lab underlay (tcpdump in <lab>-underlay, on node k's bridge port nk),
 * read back from the pcap file: every IPv4 packet's addresses, protocol and ports, and whether a
 * byte string appears anywhere in the captured frames.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';

export interface CapturedPacket { src: string; dst: string; proto: number; sport?: number; dport?: number; fragment: boolean }

export interface Capture {
  stop(): Promise<{ packets: CapturedPacket[]; raw: Buffer; tcpdump: string }>;
}

const ip4 = (b: Buffer, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

export function parsePcap(buf: Buffer): CapturedPacket[] {
  if (buf.length < 24) return [];
  const le = buf.readUInt32LE(0) === 0xa1b2c3d4 || buf.readUInt32LE(0) === 0xa1b23c4d;
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const out: CapturedPacket[] = [];
  for (let off = 24; off + 16 <= buf.length;) {
    const incl = u32(off + 8);
    const f = off + 16;
    off = f + incl;
    if (off > buf.length || incl < 34 || buf.readUInt16BE(f + 12) !== 0x0800) continue;
    const l3 = f + 14;
    const ihl = (buf[l3]! & 0x0f) * 4;
    const proto = buf[l3 + 9]!;
    const fragOff = buf.readUInt16BE(l3 + 6) & 0x1fff;
    const p: CapturedPacket = { src: ip4(buf, l3 + 12), dst: ip4(buf, l3 + 16), proto, fragment: fragOff !== 0 };
    if (!p.fragment && (proto === 6 || proto === 17) && l3 + ihl + 4 <= off) {
      p.sport = buf.readUInt16BE(l3 + ihl);
      p.dport = buf.readUInt16BE(l3 + ihl + 2);
    }
    out.push(p);
  }
  return out;
}

/**
 * Starts tcpdump on the underlay port of node k; resolves once it listens. Immediate mode: by
 * default libpcap reads a TPACKET_V3 ring whose blocks reach tcpdump only when full or after
 * their 1 s timeout, and a block not yet handed over when tcpdump is stopped is lost with every
 * packet in it (a short exchange then vanished from the capture, seen in full-suite runs).
 */
export function captureUnderlay(lab: string, k: number, file: string): Promise<Capture> {
  return captureIn(`${lab}-underlay`, `n${k}`, file);
}

/** The same capture on any interface of any named network namespace (a pod's eth0, say). */
export async function captureIn(netns: string, iface: string, file: string): Promise<Capture> {
  const child = spawn('ip', ['netns', 'exec', netns, 'tcpdump', '-i', iface, '-nn', '--immediate-mode', '-U', '-s', '0', '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 20_000);
    child.stderr!.on('data', (c: Buffer) => {
      err += c.toString();
      if (err.includes('listening on')) { clearTimeout(t); resolve(); }
    });
    child.on('exit', (code) => { clearTimeout(t); reject(new Error(`tcpdump exited ${code}: ${err}`)); });
  });
  return {
    async stop() {
      // let the last packets reach the file, then stop by pid
      await new Promise((r) => setTimeout(r, 500));
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      await done;
      const raw = await readFile(file);
      return { packets: parsePcap(raw), raw, tcpdump: err.trim() };
    },
  };
}
