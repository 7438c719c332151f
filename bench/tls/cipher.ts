/**
 * What a TLS endpoint of the bench negotiates with OpenSSL's default offer (wrk's: TLS 1.3 with
 * TLS_AES_256_GCM_SHA384 first), read with `openssl s_client -brief`: the bench prints it for each
 * proxy, so a ratio is read knowing whether both sides ran the same suite.
 */
import { spawnSync } from 'node:child_process';

export function negotiatedCipher(port: number, servername: string): string {
  const r = spawnSync('openssl', ['s_client', '-brief', '-connect', `127.0.0.1:${port}`, '-servername', servername], { input: '', timeout: 10_000, encoding: 'utf8' });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const suite = /Ciphersuite:\s*(\S+)/.exec(out)?.[1];
  const version = /Protocol version:\s*(\S+)/.exec(out)?.[1];
  return suite ? `${version ?? '?'} ${suite}` : 'unknown';
}

/** The TLS 1.3 suites of an OpenSSL cipher string, for a HAProxy `ciphersuites` bind option. */
export function tls13Suites(ciphers: string): string {
  return ciphers.split(':').filter((c) => c.startsWith('TLS_')).join(':');
}
