/**
 * What a TLS endpoint of the bench negotiates with OpenSSL's default offer (wrk's: TLS 1.3 with
 * TLS_AES_256_GCM_SHA384 first, key share X25519), read with `openssl s_client -msg`: the bench
 * prints it for each proxy, so a ratio is read knowing whether both sides did the same handshake
 * work. A full handshake and then a resumption of its session are made; from them: the version
 * and suite, the key exchange group, the server's signature (type and digest) and certificate
 * keys (leaf first), the NewSessionTicket messages the server sends after a full and after a
 * resumed handshake (OpenSSL servers send 2 and 1), and whether the ticket was accepted.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SClientFacts {
  /** `TLSv1.3` */
  version?: string;
  suite?: string;
  /** the key exchange group, `X25519` */
  group?: string;
  /** `ECDSA-SHA256`; absent on a resumed handshake (no CertificateVerify) */
  signature?: string;
  /** the certificate chain's keys as s_client prints them, leaf first: `id-ecPublicKey 256` */
  chain: string[];
  /** NewSessionTicket messages received */
  tickets: number;
  reused: boolean;
}

/** The facts of one `openssl s_client -msg` transcript (its stdout and stderr). */
export function parseSClient(out: string): SClientFacts {
  const session = /^(New|Reused), (TLSv[\d.]+), Cipher is (\S+)/m.exec(out);
  const facts: SClientFacts = {
    chain: [...out.matchAll(/^\s+a:PKEY: ([\w-]+), (\d+) \(bit\)/gm)].map((m) => `${m[1]} ${m[2]}`),
    tickets: [...out.matchAll(/^<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], NewSessionTicket$/gm)].length,
    reused: session?.[1] === 'Reused',
  };
  if (session) { facts.version = session[2]; facts.suite = session[3]; }
  const group = /^Server Temp Key: ([^,\n]+)/m.exec(out)?.[1];
  if (group) facts.group = group;
  const type = /^Peer signature type: (\S+)/m.exec(out)?.[1];
  const digest = /^Peer signing digest: (\S+)/m.exec(out)?.[1];
  if (type) facts.signature = digest ? `${type}-${digest}` : type;
  return facts;
}

export interface HandshakeFacts { full: SClientFacts; resumed: SClientFacts }

/** One line: `TLSv1.3 TLS_AES_128_GCM_SHA256, X25519, ECDSA-SHA256, chain id-ecPublicKey 256 < ..., tickets 2 full / 1 resumed`. */
export function describeHandshake(h: HandshakeFacts): string {
  const f = h.full;
  if (!f.suite) return 'unknown (no handshake)';
  const resumed = h.resumed.reused ? `${h.resumed.tickets} resumed` : 'not resumed';
  return `${f.version} ${f.suite}, ${f.group ?? '?'}, ${f.signature ?? '?'}, chain ${f.chain.join(' < ') || '?'}, tickets ${f.tickets} full / ${resumed}`;
}

/**
 * A full handshake with the endpoint and a resumption of its session, each with an HTTP request
 * (`Connection: close`) so that the server's tickets, sent after the client's Finished, are read.
 */
export async function handshakeFacts(port: number, servername: string): Promise<HandshakeFacts> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-tls-hs-'));
  const sess = join(dir, 'session.pem');
  const request = `GET /v1/models HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`;
  const run = (extra: string[]) => new Promise<SClientFacts>((resolve) => {
    const c = execFile('openssl', ['s_client', '-msg', '-ign_eof', '-connect', `127.0.0.1:${port}`, '-servername', servername, ...extra], { timeout: 10_000 },
      (_e, stdout, stderr) => resolve(parseSClient(`${stdout}${stderr}`)));
    c.stdin?.end(request);
  });
  try {
    const full = await run(['-sess_out', sess]);
    return { full, resumed: full.suite ? await run(['-sess_in', sess]) : { chain: [], tickets: 0, reused: false } };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What handshakeFacts tells of an endpoint, in one line (see describeHandshake). */
export async function negotiatedHandshake(port: number, servername: string): Promise<string> {
  return describeHandshake(await handshakeFacts(port, servername));
}

/** The TLS 1.3 suites of an OpenSSL cipher string, for a HAProxy `ciphersuites` bind option. */
export function tls13Suites(ciphers: string): string {
  return ciphers.split(':').filter((c) => c.startsWith('TLS_')).join(':');
}
