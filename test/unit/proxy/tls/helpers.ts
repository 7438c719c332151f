/** Test CAs (openssl) and a TLS echo upstream for the TLS proxy tests. */
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CertificateIssuer } from '../../../../src/proxy/tls/issuer.ts';

export function opensslCA(cn = 'test CA'): { cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'mbr-ca-'));
  try {
    const key = join(dir, 'ca.key');
    const crt = join(dir, 'ca.crt');
    execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
    execFileSync('openssl', ['req', '-x509', '-new', '-key', key, '-subj', `/CN=${cn}`, '-days', '2', '-out', crt,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,digitalSignature']);
    return { cert: readFileSync(crt, 'utf8'), key: readFileSync(key, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A TLS echo server whose certificates come from `issuer` for whatever name is asked. */
export async function tlsUpstream(issuer: CertificateIssuer): Promise<{ port: number; close(): void; names: string[]; resumed: boolean[]; lines: string[] }> {
  const names: string[] = [];
  /** every request line answered, in order (what the proxy forwarded) */
  const lines: string[] = [];
  /** per accepted connection: whether it resumed a TLS session */
  const resumed: boolean[] = [];
  const srv = tls.createServer({
    SNICallback: (name, cb) => { issuer.certFor(name).then((c) => cb(null, c.context), (e: Error) => cb(e)); },
    ALPNProtocols: ['http/1.1'],
  }, (s) => {
    names.push((s as tls.TLSSocket & { servername?: string }).servername ?? '');
    resumed.push(s.isSessionReused());
    let buf = '';
    s.on('data', (c: Buffer) => {
      buf += c.toString();
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const line = buf.slice(0, buf.indexOf('\r\n'));
        buf = buf.slice(end + 4);
        lines.push(line);
        const body = JSON.stringify({ line, sni: (s as tls.TLSSocket & { servername?: string }).servername });
        s.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      }
    });
    s.on('error', () => {});
  });
  srv.on('tlsClientError', () => {});
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, names, resumed, lines, close: () => srv.close() };
}

