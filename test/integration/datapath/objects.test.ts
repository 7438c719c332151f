// Every BPF object the agent loads passes the kernel's verifier. The endpoint object is loaded by
// every datapath test; the WireGuard build of the same programs (bpf/wireguard.bpf.c, cilium_wg0)
// and the strict-mode object only in a lab with encryption, so a change to the shared code that
// takes one of them over a verifier limit (the 512-byte combined stack) would show first there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfMap, BpfObject, MapType } from '../../../src/sys/bpf.ts';
import { skipUnless } from '../../support/requirements.ts';

const DIST = fileURLToPath(new URL('../../../dist/bpf/', import.meta.url));
const OBJECTS = ['endpoint', 'wireguard', 'encrypt'];

/** Runs `fn` with a pin root of this test's own, removed afterwards even when `fn` fails. */
function withPinRoot(name: string, fn: (root: string) => void): void {
  const root = `/sys/fs/bpf/${name}-${process.pid}`;
  mkdirSync(root, { recursive: true });
  try {
    fn(root);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

test('every BPF object loads: endpoint, its WireGuard build, strict mode', { skip: skipUnless('root') }, () => {
  withPinRoot('mb-objects', (root) => {
    for (const f of OBJECTS) {
      let err = '';
      try {
        BpfObject.load(join(DIST, `${f}.bpf.o`), root).close();
      } catch (e) {
        err = (e as Error).message;
      }
      assert.equal(err, '', `${f}.bpf.o`);
    }
  });
});

// A preallocated hash map recycles a replaced element as the writer CPU's spare at once: a packet
// on another CPU still reading it could see the next update's bytes (one endpoint's ifindex with
// another's identity, half of another backend's address). The maps the agent rewrites while
// packets read them are allocated per element and freed after an RCU grace period, as Cilium's.
test('the maps the agent rewrites under running packets are not preallocated (BPF_F_NO_PREALLOC)', { skip: skipUnless('root') }, () => {
  const BPF_F_NO_PREALLOC = 1;
  withPinRoot('mb-objects-flags', (root) => {
    for (const f of OBJECTS) BpfObject.load(join(DIST, `${f}.bpf.o`), root).close();
    const names = ['mb_endpoints', 'mb_ep_ids', 'mb_devices', 'mb_lb4_services', 'mb_lb4_backends', 'mb_lb4_reverse_nat',
      'mb_lb6_services', 'mb_lb6_backends', 'mb_lb6_reverse_nat', 'mb_wg_peers', 'mb_ipcache', 'mb_ipcache_host', 'mb_policy'];
    const preallocated: string[] = [];
    for (const n of names) {
      const m = BpfMap.fromPin(join(root, n));
      try {
        if (m.info.type === MapType.HASH || m.info.type === MapType.LPM_TRIE) {
          if (!(m.info.flags & BPF_F_NO_PREALLOC)) preallocated.push(n);
        } else preallocated.push(`${n} (type ${m.info.type})`);
      } finally {
        m.close();
      }
    }
    assert.deepEqual(preallocated, []);
  });
});

// mb_config is written while packets read it: through bpf_map_update_elem the kernel copies the
// whole value with memcpy, so a packet could read half of a changed field (a revision of two
// revisions' bytes, an overlay ifindex naming another device). The agent maps it and writes each
// field with one aligned store; a restart keeps the revision.
test('mb_config is mapped into the agent and each field is written through the mapping', { skip: skipUnless('root') }, async () => {
  const { Loader } = await import('../../../src/datapath/linux/loader.ts');
  const { ConfigMap } = await import('../../../src/datapath/linux/configmap.ts');
  const { decodeDpConfig, encodeDpConfig, encodeU32, DP_F_NO_SERVICES, DP_F_TUNNEL } = await import('../../../src/datapath/linux/codec.ts');
  const { BPF_F_MMAPABLE } = await import('../../../src/sys/bpf.ts');
  withPinRoot('mb-objects-config', (root) => {
    const loaders: InstanceType<typeof Loader>[] = [];
    const configs: InstanceType<typeof ConfigMap>[] = [];
    const open = () => { const l = new Loader(); l.load(join(DIST, 'endpoint.bpf.o'), root); loaders.push(l); const c = new ConfigMap(l); configs.push(c); return { l, c }; };
    try {
      const { l, c } = open();
      assert.equal(l.map('mb_config').info.flags & BPF_F_MMAPABLE, BPF_F_MMAPABLE, 'mb_config is BPF_F_MMAPABLE');
      // a revision one below a carry across bytes (0x00ffffff -> 0x01000000 changes all four)
      l.map('mb_config').update(encodeU32(0), encodeDpConfig({ policyRevision: 0x00fffffe, eventIntervalNs: 0n, eventBurstNs: 0n }));
      c.init({ perSecond: 1000, burst: 10 }, { tunnel: true, monitorIntervalS: 7 });
      assert.equal(c.isMapped(), true);
      const read = () => decodeDpConfig(l.map('mb_config').lookup(encodeU32(0))!);
      assert.equal(read().policyRevision, 0x00fffffe, 'init keeps the pinned revision');
      c.bumpPolicyRevision();
      c.bumpPolicyRevision();
      c.setOverlayIfindex(0x1234);
      c.setFlag(DP_F_NO_SERVICES, true);
      assert.deepEqual(read(), {
        policyRevision: 0x01000000, flags: DP_F_TUNNEL | DP_F_NO_SERVICES, eventIntervalNs: 1_000_000n, eventBurstNs: 9_000_000n,
        overlayIfindex: 0x1234, monitorIntervalS: 7,
      });
      c.setFlag(DP_F_NO_SERVICES, false);
      assert.equal(read().flags, DP_F_TUNNEL);
      c.unmap();
      l.close();
      // the next agent: the revision goes on from the pinned one
      const second = open();
      second.c.init({ perSecond: 0, burst: 0 });
      second.c.bumpPolicyRevision();
      assert.equal(decodeDpConfig(second.l.map('mb_config').lookup(encodeU32(0))!).policyRevision, 0x01000001);
    } finally {
      for (const c of configs) c.unmap();
      for (const l of loaders) l.close();
    }
  });
});
