// What a CNI ADD may name as the container's network namespace, asked from where an agent runs: an
// agent in a namespace of its own (a lab node) must refuse the machine's initial namespace as well
// as its own, and take another namespace. Read-only: nothing is entered or changed; the test
// names only namespaces it made (and reads /proc/1/ns/net's inode).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { skipUnless } from '../../support/requirements.ts';

const NETLINK = fileURLToPath(new URL('../../../src/sys/netlink.ts', import.meta.url));
const NODE = fileURLToPath(new URL('../../../bin/node', import.meta.url));

test('from an agent in a namespace of its own: its own and the machine\'s initial namespace are refused, another namespace is taken', { skip: skipUnless('root') }, () => {
  const agentNs = `mbra${process.pid}`, podNs = `mbrp${process.pid}`;
  const made: string[] = [];
  try {
    for (const n of [agentNs, podNs]) { execFileSync('ip', ['netns', 'add', n]); made.push(n); }
    const ask = (path: string) => execFileSync('ip', ['netns', 'exec', agentNs, NODE, '-e',
      `import(${JSON.stringify(NETLINK)}).then((m) => console.log(JSON.stringify(m.containerNetnsRefusal(process.argv[1]) ?? null)))`, path], { encoding: 'utf8' }).trim();
    // pid 1's namespace: refused, as the initial one where it can be read, else as unreadable
    // (a sandbox whose pid 1 belongs to another user namespace: no pod could name it either)
    let initReadable = true;
    try { execFileSync('stat', ['-L', '/proc/1/ns/net'], { stdio: 'ignore' }); } catch { initReadable = false; }
    assert.match(ask('/proc/1/ns/net'), initReadable ? /initial network namespace/ : /EACCES|EPERM/);
    assert.match(ask(`/run/netns/${agentNs}`), /agent's own network namespace/);
    assert.match(ask('/etc/hostname'), /not a network namespace file/);
    assert.equal(ask(`/run/netns/${podNs}`), 'null');
  } finally {
    for (const n of made) execFileSync('ip', ['netns', 'del', n]);
  }
});
