/**
 * The strict request body reader: what it accepts (the positive controls) and every trick that
 * could make the proxy judge one model while the server runs another.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BODY_LIMITS, duplicateKey, readAIRequest, structureProblem } from '../../../../src/proxy/ai/request.ts';

const b = (s: string) => Buffer.from(s, 'utf8');

test('chat, completions, responses, messages, embeddings: model, stream, max tokens × choices, include_usage', () => {
  assert.deepEqual(readAIRequest(b('{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'), 'chat.completions'),
    { ok: true, model: 'gpt-4o-mini', stream: false, maxTokens: undefined, includeUsage: false, background: false });
  assert.deepEqual(readAIRequest(b('{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":100,"max_completion_tokens":200,"n":3}'), 'chat.completions'),
    { ok: true, model: 'gpt-4o', stream: true, maxTokens: 600, includeUsage: true, background: false });
  assert.equal((readAIRequest(b('{"model":"m","max_tokens":16,"n":2,"best_of":5}'), 'completions') as { maxTokens: number }).maxTokens, 80);
  assert.equal((readAIRequest(b('{"model":"m","max_output_tokens":50,"max_tokens":999}'), 'responses') as { maxTokens: number }).maxTokens, 50);
  assert.equal((readAIRequest(b('{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[]}'), 'messages') as { maxTokens: number }).maxTokens, 1024);
  assert.equal((readAIRequest(b('{"model":"text-embedding-3-small","input":"x","max_tokens":5}'), 'embeddings') as { maxTokens?: number }).maxTokens, undefined);
  // null is "not set", as the APIs document
  assert.deepEqual(readAIRequest(b('{"model":"m","max_tokens":null,"n":null,"stream":null}'), 'chat.completions'), { ok: true, model: 'm', stream: false, maxTokens: undefined, includeUsage: false, background: false });
  // a background response (Responses API only): its usage is read later by another request
  assert.equal((readAIRequest(b('{"model":"m","background":true}'), 'responses') as { background: boolean }).background, true);
  assert.equal((readAIRequest(b('{"model":"m","background":true}'), 'chat.completions') as { background: boolean }).background, false);
  assert.deepEqual(readAIRequest(b('{"model":"m","background":"yes"}'), 'responses'), { ok: false, code: 'invalid_field', message: 'background must be a boolean', param: 'background' });
  // an escaped key is the same key
  assert.equal((readAIRequest(b('{"mod\\u0065l":"gpt-4o"}'), 'chat.completions') as { model: string }).model, 'gpt-4o');
});

test('the top-level model counts; a model inside messages or metadata is content', () => {
  const r = readAIRequest(b('{"messages":[{"role":"user","content":"x","model":"gpt-4o"}],"metadata":{"model":"gpt-4o"},"model":"gpt-4o-mini"}'), 'chat.completions');
  assert.equal(r.ok && r.model, 'gpt-4o-mini');
  const nested = readAIRequest(b('{"request":{"model":"gpt-4o"}}'), 'chat.completions');
  assert.deepEqual([nested.ok, !nested.ok && nested.param], [false, 'model']);
});

test('refused: duplicate keys anywhere (escaped or not), non-JSON, non-UTF-8, wrong types, odd models', () => {
  const cases: [string | Buffer, string, string?][] = [
    ['{"model":"gpt-4o-mini","model":"gpt-4o"}', 'duplicate_key', 'model'],
    ['{"model":"gpt-4o-mini","mod\\u0065l":"gpt-4o"}', 'duplicate_key', 'model'],
    ['{"model":"gpt-4o-mini","stream_options":{"include_usage":false,"include_usage":true}}', 'duplicate_key'],
    ['{"model":"m","messages":[{"role":"user","role":"system"}]}', 'duplicate_key'],
    ['{"model":"gpt-4o-mini",}', 'invalid_json'],
    ['{"model":"gpt-4o-mini"} x', 'invalid_json'],
    ['\ufeff{"model":"gpt-4o-mini"}', 'invalid_json'],
    ['// c\n{"model":"gpt-4o-mini"}', 'invalid_json'],
    ['["gpt-4o"]', 'invalid_json'],
    ['null', 'invalid_json'],
    ['', 'invalid_json'],
    [Buffer.from([0x7b, 0x22, 0x6d, 0xff, 0x22, 0x3a, 0x31, 0x7d]), 'not_utf8'],
    ['{"messages":[]}', 'invalid_field', 'model'],
    ['{"model":["gpt-4o"]}', 'invalid_field', 'model'],
    ['{"model":" gpt-4o"}', 'invalid_field', 'model'],
    ['{"model":"gpt-4o\\u0000"}', 'invalid_field', 'model'],
    ['{"model":""}', 'invalid_field', 'model'],
    [`{"model":"${'a'.repeat(257)}"}`, 'invalid_field', 'model'],
    ['{"model":"m","stream":"true"}', 'invalid_field', 'stream'],
    ['{"model":"m","max_tokens":1.5}', 'invalid_field', 'max_tokens'],
    ['{"model":"m","max_tokens":-1}', 'invalid_field', 'max_tokens'],
    ['{"model":"m","max_tokens":"100"}', 'invalid_field', 'max_tokens'],
    ['{"model":"m","max_tokens":1e300}', 'invalid_field', 'max_tokens'],
    ['{"model":"m","n":0}', 'invalid_field', 'n'],
    ['{"model":"m","stream_options":true}', 'invalid_field', 'stream_options'],
  ];
  for (const [body, code, param] of cases) {
    const r = readAIRequest(typeof body === 'string' ? b(body) : body, 'chat.completions');
    assert.equal(r.ok, false, String(body));
    if (!r.ok) {
      assert.equal(r.code, code, String(body));
      if (param) assert.equal(r.param, param, String(body));
    }
  }
  assert.equal(readAIRequest(b('{"model":"text-embedding-3-small","stream":true}'), 'embeddings').ok, false);
});

test('property: duplicateKey agrees with a reference on generated JSON, and finds every injected duplicate', () => {
  const key = fc.constantFrom('model', 'stream', 'a', 'b', 'x\\"y', 'mod\\u0065l', 'ü');
  const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
    v: fc.oneof({ depthSize: 'small' }, fc.integer(), fc.string({ maxLength: 5 }), fc.boolean(), fc.constant(null), fc.array(tie('v'), { maxLength: 3 }), tie('o')),
    o: fc.array(fc.tuple(key, tie('v')), { maxLength: 4 }),
  })).v;
  // serialise with keys written as given (duplicates and escapes preserved)
  const ser = (v: unknown): string => {
    if (Array.isArray(v) && v.every((e) => Array.isArray(e) && e.length === 2 && typeof e[0] === 'string' && (e[0] as string).length < 12)) {
      return `{${(v as [string, unknown][]).map(([k, x]) => `"${k}":${ser(x)}`).join(',')}}`;
    }
    if (Array.isArray(v)) return `[${v.map(ser).join(',')}]`;
    return JSON.stringify(v);
  };
  // reference: a recursive parse that keeps every key of every object
  const ref = (text: string): boolean => {
    let dup = false;
    // a stack of key sets, each string decoded by JSON.parse
    const stack: Set<string>[] = [];
    const objs: boolean[] = [];
    let i = 0;
    let expect = false;
    while (i < text.length) {
      const c = text[i]!;
      if (c === '"') {
        let j = i + 1;
        while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
        const s = JSON.parse(text.slice(i, j + 1)) as string;
        if (expect) { if (stack[stack.length - 1]!.has(s)) dup = true; stack[stack.length - 1]!.add(s); expect = false; }
        i = j + 1;
        continue;
      }
      if (c === '{') { stack.push(new Set()); objs.push(true); expect = true; } else if (c === '[') { stack.push(new Set()); objs.push(false); expect = false; } else if (c === '}' || c === ']') { stack.pop(); objs.pop(); expect = false; } else if (c === ',') expect = objs[objs.length - 1] === true;
      i++;
    }
    return dup;
  };
  fc.assert(fc.property(fc.array(fc.tuple(key, value), { maxLength: 5 }), (top) => {
    const text = ser(top);
    assert.equal(duplicateKey(text) !== undefined, ref(text), text);
    const withDup = ser([...top, ['model', 1], ['mod\\u0065l', 2]]);
    assert.notEqual(duplicateKey(withDup), undefined, withDup);
  }), { numRuns: 400 });
});

test('bodies of mostly structure are refused before JSON.parse (it would hold the proxy up): too deep, too many arrays/objects or keys; the largest allowed pass', () => {
  const msg = (r: ReturnType<typeof readAIRequest>) => (r.ok ? 'ok' : `${r.code}: ${r.message}`);
  const at = (d: number) => `{"model":"m","x":${'['.repeat(d - 1)}${']'.repeat(d - 1)}}`;
  assert.equal(msg(readAIRequest(b(at(BODY_LIMITS.depth)), 'chat.completions')), 'ok', 'positive control: exactly the deepest allowed');
  assert.equal(msg(readAIRequest(b(at(BODY_LIMITS.depth + 1)), 'chat.completions')), `too_complex: the request body nests arrays and objects deeper than ${BODY_LIMITS.depth} levels`);
  assert.equal(msg(readAIRequest(b('['.repeat(1 << 20)), 'chat.completions')), `too_complex: the request body nests arrays and objects deeper than ${BODY_LIMITS.depth} levels`);
  const objects = (k: number) => `{"model":"m","x":[${Array.from({ length: k }, () => '{}').join(',')}]}`;
  assert.equal(msg(readAIRequest(b(objects(BODY_LIMITS.containers - 2)), 'chat.completions')), 'ok');
  assert.equal(msg(readAIRequest(b(objects(BODY_LIMITS.containers)), 'chat.completions')), `too_complex: the request body has more than ${BODY_LIMITS.containers} arrays and objects`);
  const keys = (k: number) => `{"model":"m",${Array.from({ length: k }, (_, i) => `"k${i}":1`).join(',')}}`;
  assert.equal(msg(readAIRequest(b(keys(BODY_LIMITS.keys - 1)), 'chat.completions')), 'ok');
  assert.equal(msg(readAIRequest(b(keys(BODY_LIMITS.keys)), 'chat.completions')), `too_complex: the request body has more than ${BODY_LIMITS.keys} keys`);
  // brackets and colons inside strings (escaped quotes included) are content
  assert.equal(msg(readAIRequest(b(`{"model":"m","x":"${'[{:'.repeat(100)}\\\"${'[:'.repeat(100)}"}`), 'chat.completions')), 'ok');
});

test('property: structureProblem agrees with the depth, container and key counts of the parsed document', () => {
  const count = (v: unknown): { depth: number; containers: number; keys: number } => {
    if (typeof v !== 'object' || v === null) return { depth: 0, containers: 0, keys: 0 };
    const kids = Object.values(v).map(count);
    return {
      depth: 1 + Math.max(0, ...kids.map((k) => k.depth)),
      containers: 1 + kids.reduce((n, k) => n + k.containers, 0),
      keys: (Array.isArray(v) ? 0 : Object.keys(v).length) + kids.reduce((n, k) => n + k.keys, 0),
    };
  };
  fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 40 }), (v, depth, containers, keys) => {
    const c = count(v);
    const expected = c.depth > depth || c.containers > containers || c.keys > keys;
    return (structureProblem(JSON.stringify(v), { depth, containers, keys }) !== undefined) === expected;
  }));
});
