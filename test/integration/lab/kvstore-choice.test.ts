/**
 * `membrane up` refuses kvstore and routing choices it cannot honour before it makes anything:
 * memory with several nodes, a TCP etcd endpoint the node namespaces cannot reach, an unknown routing mode.
 */
import { skipUnless } from '../../support/requirements.ts';
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { TestLab } from '../support/lab.ts';

const lab = new TestLab(`kc${process.pid % 10000}`);
const skip = skipUnless('root');
after(async () => { await lab.down(); });

const netns = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith(`${lab.name}-`));

test('refused before anything is made, each with its code and a hint', { skip }, async () => {
  const cases: [string[], RegExp][] = [
    [['up', '--nodes', '2', '--kvstore', 'memory'], /LAB_KVSTORE_MEMORY_MULTINODE.*would not share[\s\S]*hint:/],
    [['up', '--kvstore-endpoint', 'http://127.0.0.1:2379'], /LAB_KVSTORE_UNREACHABLE.*no route[\s\S]*hint: .*unix/],
    [['up', '--nodes', '2', '--routing-mode', 'geneve'], /CONFIG_INVALID.*tunnel or native/],
    [['up', '--kvstore', 'consul'], /CONFIG_INVALID.*memory or etcd/],
  ];
  for (const [args, want] of cases) {
    const r = await lab.run(args);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, want);
    assert.deepEqual(netns(), [], `${args.join(' ')} made namespaces`);
    // the TestLab's own owner file may be there; nothing of the lab's
    const made = existsSync(lab.paths.stateDir) ? readdirSync(lab.paths.stateDir).filter((f) => f !== '.test-owner') : [];
    assert.deepEqual(made, [], `${args.join(' ')} made files in ${lab.paths.stateDir}`);
  }
});
