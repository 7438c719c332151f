/**
 * routes4 (src/sys/netlink.ts), the rtnetlink dump the WireGuard supervision reads every second
 * instead of forking `ip`: in a namespace of its own, what it returns is what `ip route show table
 * all` prints (tables, prefixes, output devices), and a route deleted is gone from the next dump.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

const repo = join(import.meta.dirname, '../../..');
const ns = `mbr-nl-${process.pid}`;
const ipn = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, 'ip', ...args], { encoding: 'utf8' });
/** routes4() run by a Node process inside the namespace (a dump reads the caller's own namespace) */
const dump = (): { table: number; dst: string; oif: number }[] => JSON.parse(execFileSync('ip', ['netns', 'exec', ns, join(repo, 'bin/node'), '--input-type=module', '-e',
  `import { routes4 } from ${JSON.stringify(join(repo, 'src/sys/netlink.ts'))}; console.log(JSON.stringify(routes4()));`], { encoding: 'utf8' }));
const key = (r: { table: number; dst: string; oif: number }) => `${r.table} ${r.dst} ${r.oif}`;

test('routes4: every IPv4 route of every table with its device, as ip prints them', { skip: process.getuid?.() !== 0 && 'needs root (network namespaces)' }, (t) => {
  execFileSync('ip', ['netns', 'add', ns]);
  t.after(() => execFileSync('ip', ['netns', 'del', ns]));
  ipn('link', 'add', 'nl0', 'type', 'veth', 'peer', 'name', 'nl1'); // no dummy module on these kernels
  ipn('link', 'set', 'nl0', 'up');
  ipn('link', 'set', 'nl1', 'up');
  ipn('addr', 'add', '192.0.2.10/24', 'dev', 'nl0');
  ipn('route', 'add', '10.244.7.0/24', 'dev', 'nl1', 'scope', 'link');
  ipn('route', 'add', 'table', '2005', '192.0.2.77/32', 'dev', 'nl1', 'scope', 'link');
  ipn('route', 'add', 'table', '2005', 'default', 'via', '192.0.2.1', 'dev', 'nl0');
  const idx = (dev: string) => Number(/^(\d+):/.exec(ipn('-o', 'link', 'show', dev))![1]);
  const fromIp = (JSON.parse(ipn('-j', '-4', 'route', 'show', 'table', 'all')) as { dst: string; dev?: string; table?: string }[])
    .filter((r) => r.dev)
    .map((r) => ({ table: r.table === undefined || r.table === 'main' ? 254 : r.table === 'local' ? 255 : Number(r.table), dst: r.dst === 'default' ? '0.0.0.0/0' : r.dst.includes('/') ? r.dst : `${r.dst}/32`, oif: idx(r.dev!) }));
  const got = dump();
  assert.deepEqual(new Set(got.map(key)), new Set(fromIp.map(key)));
  for (const want of [{ table: 254, dst: '10.244.7.0/24', oif: idx('nl1') }, { table: 2005, dst: '192.0.2.77/32', oif: idx('nl1') }, { table: 2005, dst: '0.0.0.0/0', oif: idx('nl0') }]) {
    assert.ok(got.some((r) => key(r) === key(want)), `${key(want)} in ${JSON.stringify(got)}`);
  }
  ipn('route', 'del', 'table', '2005', '192.0.2.77/32');
  assert.ok(!dump().some((r) => r.dst === '192.0.2.77/32'), 'a deleted route is gone from the next dump');
});
