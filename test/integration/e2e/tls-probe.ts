// Runs inside a pod (via `membrane exec`): sends hand-made TLS ClientHellos (and other bytes) to
// ip:port and reports, per case, what came back: the first reply bytes (hex), a reset, a close, or
// nothing within the timeout. One JSON line of results.
//   bin/node tls-probe.ts IP PORT case[,case...]
// Cases: ok:<sni> tls10:<sni> ssl3 nosni truncated badlen notls sslv2 giant:<sni> big:<sni> illegal
//        split:<sni> (the hello in 1-byte segments) rec3:<sni> (over 3 TLS records) half:<sni> (half a hello, then EOF)
import { connect } from 'node:net';

const [ip, portStr, list] = process.argv.slice(2);
const port = Number(portStr);
const timeoutMs = Number(process.env.PROBE_TIMEOUT_MS ?? 3000);

function hello(o: { sni?: string | Buffer; extra?: Buffer; recordVersion?: number; legacyVersion?: number; versions?: number[] }): Buffer {
  const exts: Buffer[] = [];
  const ext = (type: number, data: Buffer) => exts.push(Buffer.from([type >> 8, type & 255, data.length >> 8, data.length & 255]), data);
  if (o.sni !== undefined) {
    const name = Buffer.isBuffer(o.sni) ? o.sni : Buffer.from(o.sni);
    const entry = Buffer.concat([Buffer.from([0, name.length >> 8, name.length & 255]), name]);
    ext(0, Buffer.concat([Buffer.from([entry.length >> 8, entry.length & 255]), entry]));
  }
  if (o.versions) ext(43, Buffer.from([o.versions.length * 2, ...o.versions.flatMap((v) => [v >> 8, v & 255])]));
  if (o.extra) exts.push(o.extra);
  const e = Buffer.concat(exts);
  const lv = o.legacyVersion ?? 0x0303;
  // cipher suites: TLS_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
  const body = Buffer.concat([Buffer.from([lv >> 8, lv & 255]), Buffer.alloc(32, 9), Buffer.from([0, 0, 4, 0x00, 0x2f, 0xc0, 0x2f, 1, 0]), Buffer.from([e.length >> 8, e.length & 255]), e]);
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 255, body.length & 255]), body]);
  const rv = o.recordVersion ?? 0x0301;
  const out: Buffer[] = [];
  for (let i = 0; i < hs.length; i += 16384) {
    const part = hs.subarray(i, i + 16384);
    out.push(Buffer.from([22, rv >> 8, rv & 255, part.length >> 8, part.length & 255]), part);
  }
  return Buffer.concat(out);
}

function payload(c: string): { pieces: Buffer[]; gapMs?: number; end?: boolean } {
  const [kind, arg = 'api.openai.com'] = c.split(':');
  switch (kind) {
    case 'ok': return { pieces: [hello({ sni: arg })] };
    case 'tls10': return { pieces: [hello({ sni: arg, legacyVersion: 0x0301, recordVersion: 0x0301 })] };
    case 'ssl3': return { pieces: [hello({ legacyVersion: 0x0300, recordVersion: 0x0300 })] };
    case 'nosni': return { pieces: [hello({})] };
    case 'truncated': return { pieces: [hello({ sni: arg }).subarray(0, 50)], end: true };
    case 'badlen': { const h = hello({ sni: arg }); h.writeUInt16BE(0xffff, 49); return { pieces: [h] }; }
    case 'notls': return { pieces: [Buffer.from(`GET / HTTP/1.1\r\nHost: ${arg}\r\n\r\n`)] };
    case 'sslv2': return { pieces: [Buffer.from([0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10])] };
    // the largest extension block a hello can carry (64 KiB): over the proxy's 64 KiB hello limit
    case 'giant': return { pieces: [hello({ sni: arg, extra: Buffer.concat([Buffer.from([0x12, 0x34, 0xff, 0xe0]), Buffer.alloc(0xffe0, 0x41)]) })] };
    // a big (60 KiB) but acceptable extension
    case 'big': return { pieces: [hello({ sni: arg, extra: Buffer.concat([Buffer.from([0x12, 0x34, 0xf0, 0x00]), Buffer.alloc(0xf000, 0x41)]) })] };
    case 'illegal': return { pieces: [hello({ sni: Buffer.from('api.openai.com\u0000/../evil') })] };
    case 'split': return { pieces: [...hello({ sni: arg })].map((b) => Buffer.from([b])), gapMs: 2 };
    case 'rec3': {
      const m = hello({ sni: arg }).subarray(5);
      const n = Math.ceil(m.length / 3);
      return { pieces: [0, 1, 2].map((i) => { const p = m.subarray(i * n, (i + 1) * n); return Buffer.concat([Buffer.from([22, 3, 1, p.length >> 8, p.length & 255]), p]); }), gapMs: 20 };
    }
    case 'half': { const h = hello({ sni: arg }); return { pieces: [h.subarray(0, h.length >> 1)], end: true }; }
    default: throw new Error(`unknown case ${c}`);
  }
}

function run(c: string): Promise<{ result: 'reply' | 'reset' | 'closed' | 'timeout' | 'error'; first?: string; error?: string }> {
  const p = payload(c);
  return new Promise((resolve) => {
    const s = connect(port, ip!);
    let done = false;
    const finish = (r: { result: 'reply' | 'reset' | 'closed' | 'timeout' | 'error'; first?: string; error?: string }) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s.destroy();
      resolve(r);
    };
    const t = setTimeout(() => finish({ result: 'timeout' }), timeoutMs);
    s.on('data', (d: Buffer) => finish({ result: 'reply', first: d.subarray(0, 8).toString('hex') }));
    s.on('error', (e: Error & { code?: string }) => finish(e.code === 'ECONNRESET' ? { result: 'reset' } : { result: 'error', error: e.code ?? e.message }));
    s.on('end', () => finish({ result: 'closed' }));
    s.on('connect', async () => {
      for (const b of p.pieces) {
        if (done) return;
        s.write(b);
        if (p.gapMs) await new Promise((r) => setTimeout(r, p.gapMs));
      }
      if (p.end) s.end();
    });
  });
}

const out: Record<string, unknown> = {};
for (const c of list!.split(',')) out[c] = await run(c);
process.stdout.write(JSON.stringify(out) + '\n');
