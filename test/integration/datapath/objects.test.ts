// Every BPF object the agent loads passes the kernel's verifier. The endpoint object is loaded by
// every datapath test; the WireGuard build of the same programs (bpf/wireguard.bpf.c, cilium_wg0)
// and the strict-mode object only in a lab with encryption, so a change to the shared code that
// takes one of them over a verifier limit (the 512-byte combined stack) would show first there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfObject } from '../../../src/sys/bpf.ts';
import { skipUnless } from '../../support/requirements.ts';

const DIST = fileURLToPath(new URL('../../../dist/bpf/', import.meta.url));

test('every BPF object loads: endpoint, its WireGuard build, strict mode', { skip: skipUnless('root') }, () => {
  const root = `/sys/fs/bpf/mb-objects-${process.pid}`;
  mkdirSync(root, { recursive: true });
  try {
    for (const f of ['endpoint', 'wireguard', 'encrypt']) {
      let err = '';
      try {
        BpfObject.load(join(DIST, `${f}.bpf.o`), root).close();
      } catch (e) {
        err = (e as Error).message;
      }
      assert.equal(err, '', `${f}.bpf.o`);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
