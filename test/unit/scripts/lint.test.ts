import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  documentedCodes, errorCodes, fileCycleProblems, knotsOf, findCycle, labNameProblems, layerProblems, lint, type FileEdge, type ImportEdge,
} from '../../../scripts/lint.ts';

const edge = (from: string, to: string, file = `src/${from}/x.ts`): ImportEdge => ({ from, to, file, at: `${file}:1` });
const layers = { common: [], api: ['common'], policy: ['common', 'api'], agent: ['common', 'api', 'policy'] };

test('layer table: downward imports pass, upward and unknown folders fail', () => {
  assert.deepEqual(layerProblems([edge('policy', 'api'), edge('agent', 'policy'), edge('api', 'common')], layers, []), []);
  const up = layerProblems([edge('api', 'policy')], layers, []);
  assert.equal(up.length, 1);
  assert.equal(up[0]!.code, 'LINT_LAYER');
  assert.match(up[0]!.message, /api may not import policy/);
  assert.match(layerProblems([edge('policy', 'src/errors.ts')], layers, [])[0]!.message, /not a folder of the layer table/);
  assert.match(layerProblems([edge('relay', 'api')], layers, [])[0]!.message, /relay is not a folder/);
});

test('layer table: an exception names one file and one target folder only', () => {
  const ex = [{ file: 'src/api/load.ts', to: 'policy', why: 'TODO(phase B)' }];
  assert.deepEqual(layerProblems([edge('api', 'policy', 'src/api/load.ts')], layers, ex), []);
  assert.equal(layerProblems([edge('api', 'policy', 'src/api/other.ts')], layers, ex).length, 1);
  assert.equal(layerProblems([edge('api', 'agent', 'src/api/load.ts')], layers, ex).length, 1);
});

test('cycle check: finds a cycle between folders and prints it edge by edge', () => {
  assert.equal(findCycle([edge('agent', 'api'), edge('policy', 'api'), edge('agent', 'policy')]), undefined);
  const c = findCycle([edge('agent', 'api'), edge('api', 'policy'), edge('policy', 'agent'), edge('agent', 'common')]);
  assert.ok(c);
  assert.deepEqual(c.map((e) => `${e.from}>${e.to}`), ['agent>api', 'api>policy', 'policy>agent']);
  assert.deepEqual(findCycle([edge('a', 'b'), edge('b', 'a')])!.map((e) => e.from), ['a', 'b']);
});

test('error codes: taken from error constructors and issue helpers, not from other strings', () => {
  const src = [
    "throw new MembraneError('LAB_NOT_ROOT', 'x');",
    "throw new ApiRequestError(\n  'API_BAD_REQUEST', 'x');",
    "ctx.issue('POLICY_PORT_INVALID', p, 'm');",
    "issues.push({ code: 'POLICY_MAP_OVERFLOW', path: [] });",
    "const reason = 'POLICY_DENIED';",
    "envNumber('MEMBRANE_TOFQDNS_MIN_TTL');",
    "check(f.info(fd, buf, len) as number, 'BPF_MAP_INFO', `map info`);",
    "return this.#fail('SSLV2', 'SSLv2 hello');",
  ].join('\n');
  assert.deepEqual(errorCodes(src).map((c) => `${c.code}@${c.line}`), ['LAB_NOT_ROOT@1', 'API_BAD_REQUEST@2', 'POLICY_PORT_INVALID@4', 'POLICY_MAP_OVERFLOW@5', 'BPF_MAP_INFO@8', 'SSLV2@9']);
  assert.deepEqual([...documentedCodes('| `API_X_Y` / `LAB_Z` | m |\n`notacode`')], ['API_X_Y', 'LAB_Z']);
});

/** A temporary tree with an ERRORS.md and the given files under src/, removed after `use`. */
function withTree(files: Record<string, string>, use: (root: string) => void): void {
  const root = mkdtempSync(join(tmpdir(), 'lint-fixture-'));
  try {
    writeFileSync(join(root, 'ERRORS.md'), '# codes\n');
    for (const [rel, text] of Object.entries(files)) {
      mkdirSync(dirname(join(root, rel)), { recursive: true });
      writeFileSync(join(root, rel), text);
    }
    use(root);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

const codesOf = (root: string) => lint(root, []).map((p) => p.code).sort();

test('file cycles: a cycle of type-only imports inside one folder fails the lint, with the cycle printed', () => {
  withTree({
    'src/policy/a.ts': "import type { B } from './b.ts';\nexport type A = { b: B };\n",
    'src/policy/b.ts': "import { c } from './c.ts';\nexport type B = number;\nexport const b = c;\n",
    'src/policy/c.ts': "export type { A } from './a.ts';\nexport const c = 1;\n",
    'src/policy/d.ts': "import type { A } from './a.ts';\nexport type D = A;\n",
  }, (root) => {
    const found = lint(root, []);
    assert.deepEqual(found.map((p) => p.code), ['LINT_FILE_CYCLE']);
    assert.equal(found[0]!.at, 'src/policy/a.ts:1');
    assert.match(found[0]!.message, /3 file\(s\) in this knot: src\/policy\/a\.ts, src\/policy\/b\.ts, src\/policy\/c\.ts\): src\/policy\/a\.ts → src\/policy\/b\.ts → src\/policy\/c\.ts → src\/policy\/a\.ts/);
    assert.match(found[0]!.message, /src\/policy\/c\.ts → src\/policy\/a\.ts at src\/policy\/c\.ts:1/);
  });
  // the same files without the edge back: clean
  withTree({
    'src/policy/a.ts': "import type { B } from './b.ts';\nexport type A = { b: B };\n",
    'src/policy/b.ts': "export type B = number;\n",
  }, (root) => assert.deepEqual(lint(root, []), []));
});

test('file cycles: import() types, multi-line imports, a file importing itself and generated .js imports count', () => {
  withTree({
    'src/hubble/x.ts': "export const x = (f: import('./gen/y_pb.js').Y) => f;\n",
    'src/hubble/gen/y_pb.ts': "import {\n  x,\n} from '../x.ts';\nexport type Y = typeof x;\n",
    'src/hubble/self.ts': "import type { S } from './self.ts';\nexport type S = { s?: S };\n",
  }, (root) => {
    const msgs = lint(root, []).filter((p) => p.code === 'LINT_FILE_CYCLE').map((p) => p.message);
    assert.equal(msgs.length, 2);
    assert.match(msgs[0]!, /src\/hubble\/gen\/y_pb\.ts → src\/hubble\/x\.ts → src\/hubble\/gen\/y_pb\.ts/);
    assert.match(msgs[1]!, /1 file\(s\) in this knot: src\/hubble\/self\.ts/);
    // gen ↔ hubble is also a parent/sub-folder pair
    assert.ok(lint(root, []).some((p) => p.code === 'LINT_DIR_CYCLE'));
  });
});

test('folder cycles: a parent and its sub-folder that import each other fail without any file cycle', () => {
  withTree({
    'src/lab/lab.ts': "import { plan } from './dns/plan.ts';\nexport const lab = plan;\n",
    'src/lab/names.ts': 'export const name = 1;\n',
    'src/lab/dns/plan.ts': "import { name } from '../names.ts';\nexport const plan = name;\n",
  }, (root) => {
    const found = lint(root, []);
    assert.deepEqual(found.map((p) => p.code), ['LINT_DIR_CYCLE']);
    assert.match(found[0]!.message, /src\/lab → src\/lab\/dns → src\/lab/);
    assert.match(found[0]!.message, /src\/lab\/dns → src\/lab at src\/lab\/dns\/plan\.ts:1/);
  });
  // the plan beside the lab (the sub-folder only imports the parent): clean
  withTree({
    'src/lab/lab.ts': "import { plan } from './plan.ts';\nexport const lab = plan;\n",
    'src/lab/plan.ts': "import { name } from './names.ts';\nexport const plan = name;\n",
    'src/lab/names.ts': 'export const name = 1;\n',
    'src/lab/dns/server.ts': "import { name } from '../names.ts';\nexport const server = name;\n",
  }, (root) => assert.deepEqual(codesOf(root), []));
});

test('file cycles: an allowance covers exactly its knot; a grown knot and a stale allowance are reported', () => {
  const edges = (pairs: [string, string][]): FileEdge[] => pairs.map(([from, to]) => ({ from, to, at: `${from}:1` }));
  const allow = [{ files: ['p/a.ts', 'p/b.ts'], why: 'broken elsewhere' }];
  assert.deepEqual(fileCycleProblems(edges([['p/a.ts', 'p/b.ts'], ['p/b.ts', 'p/a.ts'], ['p/c.ts', 'p/a.ts']]), allow), []);
  const grown = fileCycleProblems(edges([['p/a.ts', 'p/b.ts'], ['p/b.ts', 'p/c.ts'], ['p/c.ts', 'p/a.ts']]), allow);
  assert.equal(grown.length, 2);
  assert.match(grown[0]!.message, /no longer there as written \(broken elsewhere\); remove the allowance/);
  assert.match(grown[1]!.message, /3 file\(s\) in this knot/);
  const gone = fileCycleProblems(edges([['p/a.ts', 'p/b.ts']]), allow);
  assert.deepEqual(gone.map((p) => p.at), ['scripts/lint.ts']);
  // two knots apart: each reported once, in file order
  const two = knotsOf(edges([['q/x.ts', 'q/y.ts'], ['q/y.ts', 'q/x.ts'], ['p/a.ts', 'p/b.ts'], ['p/b.ts', 'p/a.ts'], ['p/b.ts', 'q/x.ts']]));
  assert.deepEqual(two.map((k) => k.files), [['p/a.ts', 'p/b.ts'], ['q/x.ts', 'q/y.ts']]);
});

test('test labs: a lab named after the test\'s process passes; a fixed name fails with its line', () => {
  const ok = ['const lab = new TestLab(`np${process.pid % 10000}`);', 'const lab = new HostModeLab(`cnic${process.pid}`, \'10.244.211.0/24\');', 'const lab = new TestLab(`${mode}${process.pid}`);'];
  assert.deepEqual(labNameProblems('t.ts', ok.join('\n')), []);
  const bad = labNameProblems('t.ts', ['// a lab', "const a = new TestLab('fixed');", "const b = new HostModeLab('host', '10.244.9.0/24');", 'const c = new TestLab(NAME);'].join('\n'));
  assert.deepEqual(bad.map((p) => [p.at, p.code]), [['t.ts:2', 'LINT_TEST_LAB_NAME'], ['t.ts:3', 'LINT_TEST_LAB_NAME'], ['t.ts:4', 'LINT_TEST_LAB_NAME']]);
  assert.match(bad[0]!.message, /process\.pid/);
});
