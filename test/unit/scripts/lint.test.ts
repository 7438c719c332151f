import { test } from 'node:test';
import assert from 'node:assert/strict';
import { documentedCodes, errorCodes, findCycle, layerProblems, type ImportEdge } from '../../../scripts/lint.ts';

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
