/**
 * TLS of the Hubble API on TCP 4244, set up as Cilium's default install does: the server presents a
 * certificate for `<node>.<cluster>.hubble-grpc.cilium.io` signed by the Hubble CA and accepts only
 * clients whose certificate that CA signed (mutual TLS, TLS 1.3, ALPN h2). Plain text is a setting
 * (Cilium's `--hubble-disable-tls`), off unless asked for. The unix socket needs none of this: it
 * is root-only (mode 0600).
 *
 * Settings (src/common/config.ts; environment variable or `membrane up` flag), Cilium's flag in brackets:
 *   MEMBRANE_HUBBLE_DISABLE_TLS=true          [--hubble-disable-tls]        plain text on 4244 (default false)
 *   MEMBRANE_HUBBLE_TLS_CERT_FILE             [--hubble-tls-cert-file]      server certificate (PEM, leaf first)
 *   MEMBRANE_HUBBLE_TLS_KEY_FILE              [--hubble-tls-key-file]       its key (PEM, mode 0600 or stricter)
 *   MEMBRANE_HUBBLE_TLS_CLIENT_CA_FILES       [--hubble-tls-client-ca-files] CAs that sign client certificates (comma-separated)
 * Without them the agent uses the files `membrane up` made (src/lab/hubble-certs.ts).
 */
import { readFileSync, statSync } from 'node:fs';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { SecureClientSessionOptions, SecureServerOptions } from 'node:http2';
import { MembraneError } from '../common/errors.ts';

/** Hubble's TCP port on every node (Cilium's defaults.ServerPort). */
export const HUBBLE_SERVER_PORT = 4244;
const GRPC_SERVICE_DOMAIN = 'hubble-grpc.cilium.io';

/**
 * The name a client verifies on node `nodeName`'s certificate (Cilium's TLSServerName): dots in
 * node and cluster names become hyphens so that every node's name has the same depth.
 */
export function hubbleServerName(nodeName: string, clusterName = 'default'): string {
  return [nodeName.replaceAll('.', '-'), (clusterName || 'default').replaceAll('.', '-'), GRPC_SERVICE_DOMAIN].join('.');
}

export interface HubbleServerTlsFiles {
  certFile: string;
  keyFile: string;
  clientCaFiles: string[];
}

/** What the TCP listener serves: mutual TLS with these files, or plain text (explicitly). */
export type HubbleTcpSecurity = { tls: HubbleServerTlsFiles } | { plaintext: true };

/** The Hubble TLS settings of the configuration (src/common/config.ts). */
export interface HubbleTlsSettings {
  hubbleDisableTls: boolean;
  hubbleTlsCertFile: string | undefined;
  hubbleTlsKeyFile: string | undefined;
  hubbleTlsClientCaFiles: string | undefined;
}

/**
 * The TCP listener's security from the agent's settings; `defaults` are the files of the pod
 * network provider (the lab's Hubble certificates). Undefined when TLS is on but no file is known:
 * the Observer then refuses to serve TCP (HUBBLE_TLS_REQUIRED).
 */
export function hubbleTcpSecurity(s: HubbleTlsSettings, defaults?: HubbleServerTlsFiles): HubbleTcpSecurity | undefined {
  if (s.hubbleDisableTls) return { plaintext: true };
  const certFile = s.hubbleTlsCertFile ?? defaults?.certFile;
  const keyFile = s.hubbleTlsKeyFile ?? defaults?.keyFile;
  const clientCaFiles = s.hubbleTlsClientCaFiles !== undefined
    ? s.hubbleTlsClientCaFiles.split(',').map((f) => f.trim()).filter(Boolean)
    : defaults?.clientCaFiles ?? [];
  if (certFile === undefined || keyFile === undefined) return undefined;
  return { tls: { certFile, keyFile, clientCaFiles } };
}

function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new MembraneError('HUBBLE_TLS_FILE', `cannot read the hubble ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
      hint: 'in the lab `membrane up` creates it; elsewhere set MEMBRANE_HUBBLE_TLS_* (or MEMBRANE_HUBBLE_DISABLE_TLS=true for plain text)', cause: e,
    });
  }
}

/** A private key readable by anyone but its owner is refused (as ssh refuses one). */
function readKey(file: string): string {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch {
    return readPem(file, 'private key'); // reports the missing file
  }
  if ((mode & 0o077) !== 0) {
    throw new MembraneError('HUBBLE_TLS_KEY_MODE', `the hubble private key ${file} has mode ${(mode & 0o777).toString(8).padStart(4, '0')}: group or others can read it`, {
      hint: `chmod 600 ${file}`,
    });
  }
  return readPem(file, 'private key');
}

function checkPair(cert: string, key: string, certFile: string, keyFile: string): void {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (e) {
    throw new MembraneError('HUBBLE_TLS_FILE', `${certFile} holds no PEM certificate`, { hint: 'the first block must be the leaf certificate', cause: e });
  }
  let ok = false;
  try {
    ok = leaf.checkPrivateKey(createPrivateKey(key));
  } catch (e) {
    throw new MembraneError('HUBBLE_TLS_FILE', `${keyFile} holds no PEM private key`, { hint: 'PKCS#8, SEC1 or PKCS#1 PEM', cause: e });
  }
  if (!ok) throw new MembraneError('HUBBLE_TLS_FILE', `${keyFile} is not the key of ${certFile}`, { hint: 'issue the certificate and key together' });
}

/**
 * Options of the 4244 listener: mutual TLS only. Reads the files now (a missing or loose file is a
 * clear error, and nothing is served); the key material never appears in a message.
 */
export function serverTlsOptions(files: HubbleServerTlsFiles): SecureServerOptions {
  if (files.clientCaFiles.length === 0) {
    throw new MembraneError('HUBBLE_TLS_NO_CLIENT_CA', 'hubble TLS needs at least one client CA: the Observer serves mutual TLS only', {
      hint: 'set MEMBRANE_HUBBLE_TLS_CLIENT_CA_FILES (in the lab: the Hubble CA that `membrane up` made)',
    });
  }
  const cert = readPem(files.certFile, 'server certificate');
  const key = readKey(files.keyFile);
  checkPair(cert, key, files.certFile, files.keyFile);
  const ca = files.clientCaFiles.map((f) => readPem(f, 'client CA'));
  return {
    cert, key, ca,
    // Only certificates this CA signed are accepted: `ca` replaces the system roots here.
    requestCert: true, rejectUnauthorized: true,
    minVersion: 'TLSv1.3', allowHTTP1: false,
  };
}

export interface HubbleClientTlsFiles {
  caFiles?: string[];
  certFile?: string;
  keyFile?: string;
  serverName?: string;
}

/** Client side (membrane observe): the hubble CLI's --tls-ca-cert-files, --tls-client-cert-file/-key-file, --tls-server-name. */
export function clientTlsOptions(o: HubbleClientTlsFiles): SecureClientSessionOptions {
  if (!!o.certFile !== !!o.keyFile) {
    throw new MembraneError('HUBBLE_TLS_CLIENT_PAIR', '--tls-client-cert-file and --tls-client-key-file go together', { hint: '`membrane lab hubble` prints both' });
  }
  const out: SecureClientSessionOptions = { minVersion: 'TLSv1.3' };
  if (o.caFiles?.length) out.ca = o.caFiles.map((f) => readPem(f, 'CA certificate'));
  if (o.certFile && o.keyFile) {
    out.cert = readPem(o.certFile, 'client certificate');
    out.key = readPem(o.keyFile, 'client key');
  }
  if (o.serverName) out.servername = o.serverName;
  return out;
}
