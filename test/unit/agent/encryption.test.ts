/**
 * Transparent encryption's pure parts: the key pair (checked against `wg pubkey` when it is
 * installed), the key file (0600, kept across restarts), the WireguardPubKey field of Cilium's
 * node value (a malformed key is no key), the peers a node wants, the settings' checks and the
 * `Encryption:` status line as `cilium status` prints it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { generateKeyPair, isWireguardKey, publicKeyOf } from '../../../src/sys/wireguard.ts';
import { desiredPeers, ensureKeyFile } from '../../../src/agent/encryption.ts';
import { nodeValue, parseNodeValue, type ClusterNode } from '../../../src/agent/cluster-keys.ts';
import { buildConfig } from '../../../src/common/config.ts';
import { encryptionRow } from '../../../src/cli/commands/status.ts';

test('key pair: 32-byte base64 keys; the public key follows from the private one (as `wg pubkey`)', () => {
  const k = generateKeyPair();
  assert.ok(isWireguardKey(k.privateKey) && isWireguardKey(k.publicKey));
  assert.equal(publicKeyOf(k.privateKey), k.publicKey);
  assert.notEqual(generateKeyPair().publicKey, k.publicKey);
  if (existsSync('/usr/bin/wg')) assert.equal(execFileSync('wg', ['pubkey'], { input: `${k.privateKey}\n`, encoding: 'utf8' }).trim(), k.publicKey);
  assert.throws(() => publicKeyOf('c2hvcnQ='), /WG_BAD_KEY|32 bytes/);
});

test('isWireguardKey: only base64 of exactly 32 bytes', () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 40 }), (b) => isWireguardKey(Buffer.from(b).toString('base64')) === (b.length === 32)));
  for (const bad of ['', 'x', null, 42, `${generateKeyPair().publicKey} `, 'A'.repeat(44)]) assert.equal(isWireguardKey(bad), false, String(bad));
});

test('key file: made once with mode 0600, the same key on the next start', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wgkey-'));
  try {
    const file = join(dir, 'cilium_wg0.key');
    const pub = ensureKeyFile(file);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(publicKeyOf(readFileSync(file, 'utf8')), pub);
    assert.equal(ensureKeyFile(file), pub);
    writeFileSync(file, 'garbage');
    assert.throws(() => ensureKeyFile(file), /32 bytes/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("node value: WireguardPubKey round-trips; an empty or malformed key is no key", () => {
  const key = generateKeyPair().publicKey;
  const n: ClusterNode = { name: 'node2', cluster: 'default', ip: '192.0.2.2', routerIp: '10.244.2.1', podCidr: '10.244.2.0/24', wireguardPubKey: key };
  const v = JSON.parse(nodeValue(n, 'boot')) as Record<string, unknown>;
  assert.equal(v.WireguardPubKey, key);
  assert.deepEqual(parseNodeValue(JSON.stringify(v)), n);
  for (const bad of ['', 'not-a-key', 42, null]) assert.equal(parseNodeValue(JSON.stringify({ ...v, WireguardPubKey: bad }))?.wireguardPubKey, undefined);
  const { wireguardPubKey: _, ...without } = n;
  assert.equal(JSON.parse(nodeValue(without, 'b')).WireguardPubKey, '');
});

test('desired peers: every other node of the cluster with a key and a pod CIDR; node encryption adds its InternalIP', () => {
  const k = () => generateKeyPair().publicKey;
  const self: ClusterNode = { name: 'node1', cluster: 'default', ip: '192.0.2.1', podCidr: '10.244.1.0/24', wireguardPubKey: k() };
  const n2: ClusterNode = { name: 'node2', cluster: 'default', ip: '192.0.2.2', podCidr: '10.244.2.0/24', wireguardPubKey: k() };
  const nodes: ClusterNode[] = [
    self, n2,
    { name: 'nokey', cluster: 'default', ip: '192.0.2.3', podCidr: '10.244.3.0/24' },
    { name: 'nocidr', cluster: 'default', ip: '192.0.2.4', wireguardPubKey: k() },
    { name: 'other', cluster: 'elsewhere', ip: '192.0.2.5', podCidr: '10.244.5.0/24', wireguardPubKey: k() },
    { name: 'copycat', cluster: 'default', ip: '192.0.2.6', podCidr: '10.244.6.0/24', wireguardPubKey: self.wireguardPubKey! },
  ];
  assert.deepEqual(desiredPeers(self, nodes, false), [{ node: 'node2', publicKey: n2.wireguardPubKey, endpoint: '192.0.2.2:51871', allowedIps: ['10.244.2.0/24'] }]);
  assert.deepEqual(desiredPeers(self, nodes, true)[0]!.allowedIps, ['10.244.2.0/24', '192.0.2.2/32']);
  // tunnel mode: only VXLAN from the node's address crosses the device, so that is all the peer may send
  assert.deepEqual(desiredPeers(self, nodes, false, true)[0]!.allowedIps, ['192.0.2.2/32']);
  assert.deepEqual(desiredPeers(self, nodes, true, true)[0]!.allowedIps, ['192.0.2.2/32']);
});

test('settings: wireguard or disabled; strict and node encryption need encryption; ipsec is refused', () => {
  const c = buildConfig({ flags: { encryption: 'wireguard', encryptionStrict: true, routingMode: 'native' } });
  assert.equal(c.encryption, 'wireguard');
  assert.equal(c.encryptionStrict, true);
  assert.equal(c.encryptionStrictModeCidr, '10.244.0.0/16');
  assert.equal(buildConfig({}).encryption, 'disabled');
  assert.throws(() => buildConfig({ flags: { encryptionStrict: true } }), /CONFIG_INVALID|needs transparent encryption/);
  assert.throws(() => buildConfig({ flags: { encryptionNode: true } }), /needs transparent encryption/);
  assert.throws(() => buildConfig({ flags: { encryptionStrictIngress: true } }), /encryptionStrictIngress .*needs transparent encryption/);
  assert.equal(buildConfig({ flags: { encryption: 'wireguard', encryptionStrictIngress: true } }).encryptionStrictIngress, true);
  assert.equal(buildConfig({ env: { MEMBRANE_ENCRYPTION: 'wireguard', MEMBRANE_ENCRYPTION_STRICT_INGRESS: '1' } }).encryptionStrictIngress, true);
  assert.equal(c.encryptionStrictIngress, false, 'off by default, as in Cilium');
  assert.throws(() => buildConfig({ flags: { encryption: 'ipsec' } }), /ipsec is not implemented/);
  assert.throws(() => buildConfig({ flags: { encryption: 'yes' } }), /wireguard or disabled/);
  assert.throws(() => buildConfig({ flags: { encryption: 'wireguard', routingMode: 'native', encryptionStrictModeCidr: '10.244.0.0/33' } }), /IPv4 CIDR/);
});

test("status line: cilium status's Encryption format", () => {
  assert.equal(encryptionRow({
    mode: 'Wireguard',
    wireguard: { nodeEncryption: 'Disabled', strictMode: 'Enabled', strictModeIngress: 'Enabled', interfaces: [{ name: 'cilium_wg0', publicKey: 'PUB=', listenPort: 51871, peerCount: 2, implementation: 'userspace', up: true }] },
  }), '[NodeEncryption: Disabled, cilium_wg0 (Pubkey: PUB=, Port: 51871, Peers: 2)]');
  assert.equal(encryptionRow({ mode: 'Disabled' }), '');
});
