// The encryption datapath's objects (encrypt.bpf.o, wireguard.bpf.o: src/agent/encryption.ts) over
// an older build's pins: they go through the datapath's migration (pins.ts) as the main object
// does, so loading one first over changed maps does not fail (BpfObject.load alone does: the
// control below). Needs root (bpffs). Removes its pins in finally.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { skipUnless } from '../../support/requirements.ts';
import { BpfMap, BpfObject, MapType, mapInfo } from '../../../src/sys/bpf.ts';
import { Loader } from '../../../src/datapath/linux/loader.ts';
import { loadObjectMigrating } from '../../../src/datapath/linux/pins.ts';

const obj = (n: string) => fileURLToPath(new URL(`../../../dist/bpf/${n}.bpf.o`, import.meta.url));
const BPF_F_NO_PREALLOC = 1;

test('encrypt and wireguard objects over an older build\'s pins: the changed maps are replaced (same layout: entries kept), the load does not fail', { skip: skipUnless('root') }, () => {
  const pinRoot = mkdtempSync('/sys/fs/bpf/mb-upgrade-enc-');
  const open: { close(): void }[] = [];
  try {
    // the node's pins as the running build made them
    const first = new Loader();
    first.load(obj('endpoint'), pinRoot);
    first.close();
    const pin = (n: string) => `${pinRoot}/${n}`;
    // an older build's: mb_wg_peers preallocated (same layout, another flag), with a peer in it;
    // mb_encrypt with a shorter value (another layout)
    const peers = BpfMap.fromPin(pin('mb_wg_peers'));
    const p = peers.info;
    peers.close();
    rmSync(pin('mb_wg_peers'));
    const olderPeers = BpfMap.create(MapType.HASH, 'mb_wg_peers', p.keySize, p.valueSize, p.maxEntries, { flags: 0 });
    const peerKey = Buffer.from([192, 0, 2, 2]), peerVal = Buffer.from([10, 244, 2, 0, 255, 255, 255, 0]);
    olderPeers.update(peerKey, peerVal);
    olderPeers.pin(pin('mb_wg_peers'));
    olderPeers.close();
    const enc = BpfMap.fromPin(pin('mb_encrypt'));
    const e = enc.info;
    enc.close();
    rmSync(pin('mb_encrypt'));
    const olderEnc = BpfMap.create(MapType.ARRAY, 'mb_encrypt', e.keySize, 16, e.maxEntries);
    olderEnc.pin(pin('mb_encrypt'));
    olderEnc.close();

    // control: the plain load (what encryption.ts did) fails on these pins
    assert.throws(() => { open.push(BpfObject.load(obj('encrypt'), pinRoot)); }, /BPF_OBJECT_LOAD|load BPF object/);

    const strict = loadObjectMigrating(obj('encrypt'), pinRoot);
    open.push(strict.obj);
    const byName = new Map(strict.migrated.map((m) => [m.name, m]));
    assert.deepEqual([...byName.keys()].sort(), ['mb_encrypt', 'mb_wg_peers']);
    assert.equal(byName.get('mb_wg_peers')!.kept, 'copied');
    assert.equal(byName.get('mb_wg_peers')!.entries, 1);
    assert.equal(byName.get('mb_encrypt')!.kept, 'empty', 'another layout starts empty (the agent writes it again)');
    const newPeers = strict.obj.map('mb_wg_peers');
    assert.equal(newPeers.info.flags & BPF_F_NO_PREALLOC, BPF_F_NO_PREALLOC, 'the pin is the new definition');
    assert.deepEqual(newPeers.lookup(peerKey), peerVal, 'the peer carried over');
    const encNow = BpfMap.fromPin(pin('mb_encrypt'));
    open.push(encNow);
    assert.equal(mapInfo(encNow.fd).valueSize, e.valueSize, 'mb_encrypt pinned with the new layout');
    // the wireguard object, loaded after, finds the pins already its own
    const wg = loadObjectMigrating(obj('wireguard'), pinRoot);
    open.push(wg.obj);
    assert.deepEqual(wg.migrated, []);
    assert.deepEqual(readdirSync(pinRoot).filter((n) => n.endsWith(':old')), [], 'no pin left aside');
  } finally {
    for (const o of open) o.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
});
