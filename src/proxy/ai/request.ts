/**
 * Reads an AI API request body strictly, for the decision: the model, whether it streams, and the
 * most output tokens it may produce. What the proxy cannot read the way the server will is
 * refused, never guessed:
 *
 *   - the body must be UTF-8 JSON (RFC 8259, JSON.parse: no comments, trailing commas, NaN, BOM)
 *     whose top level is an object;
 *   - no object anywhere may repeat a key (after unescaping: `"mod\u0065l"` is `model`), since
 *     parsers disagree on which duplicate wins (first, last, error) and the server's might pick
 *     the value the proxy did not judge;
 *   - `model` is the top-level one (a `model` inside messages or metadata is content), a string of
 *     printable ASCII without spaces, at most 256 characters;
 *   - `stream`, the max-token fields and the choice counts have their documented types, or null.
 */
import { isUtf8 } from 'node:buffer';
import type { AIOperation } from '../../policy/ai.ts';

export interface AIRequestInfo {
  ok: true;
  model: string;
  stream: boolean;
  /** max output tokens × choices; undefined when the request sets no maximum */
  maxTokens: number | undefined;
  /** OpenAI `stream_options.include_usage`: the stream ends with a usage chunk */
  includeUsage: boolean;
  /** Responses API `background: true`: answered at once, run later, its usage read by another request */
  background: boolean;
}

export interface AIRequestProblem {
  ok: false;
  /** `not_utf8`, `invalid_json`, `duplicate_key`, `invalid_field` */
  code: string;
  message: string;
  param?: string;
}

/** The fields holding the maximum of output tokens, per operation (a request may set several). */
const MAX_FIELDS: Record<AIOperation, readonly string[]> = {
  'chat.completions': ['max_completion_tokens', 'max_tokens'],
  completions: ['max_tokens'],
  responses: ['max_output_tokens'],
  messages: ['max_tokens'],
  embeddings: [],
};
/** The fields multiplying the output (several choices, or server-side candidates). */
const CHOICE_FIELDS: Record<AIOperation, readonly string[]> = {
  'chat.completions': ['n'],
  completions: ['n', 'best_of'],
  responses: [],
  messages: [],
  embeddings: [],
};
const MODEL_RE = /^[\x21-\x7e]{1,256}$/;

function problem(code: string, message: string, param?: string): AIRequestProblem {
  return { ok: false, code, message, ...(param ? { param } : {}) };
}

/**
 * The shape a request body may have before it is parsed. The APIs' own documents stay far below
 * these (messages → content parts → tool schemas; a long conversation has some thousands of
 * objects); a megabyte made of nothing but structure (`[[[[…`, 300k `{}`, 60k keys in one
 * object) costs JSON.parse a large part of a second, holding up every connection of the node's
 * proxy, so it is refused first.
 */
export const BODY_LIMITS = { depth: 64, containers: 50_000, keys: 50_000 } as const;

/**
 * What makes a body too complex to parse here (undefined: nothing): nesting deeper than
 * `limits.depth`, more arrays and objects than `limits.containers`, more keys than `limits.keys`.
 * Strings are skipped whole (closingQuote); it stops at the first limit passed.
 */
export function structureProblem(text: string, limits: { depth: number; containers: number; keys: number } = BODY_LIMITS): string | undefined {
  let depth = 0;
  let containers = 0;
  let keys = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      const j = closingQuote(text, i);
      if (j < 0) return undefined; // an open string: JSON.parse refuses it at once
      i = j;
    } else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > limits.depth) return `the request body nests arrays and objects deeper than ${limits.depth} levels`;
      if (++containers > limits.containers) return `the request body has more than ${limits.containers} arrays and objects`;
    } else if (c === 125 /* } */ || c === 93 /* ] */) {
      depth--;
    } else if (c === 58 /* : */) {
      // outside strings, each colon follows one key
      if (++keys > limits.keys) return `the request body has more than ${limits.keys} keys`;
    }
  }
  return undefined;
}

/**
 * The index of the quote that closes the string opened at `open` (-1: none): the next quote not
 * preceded by an odd run of backslashes. Found with indexOf, since strings (the message contents)
 * are most of a body.
 */
function closingQuote(text: string, open: number): number {
  let j = text.indexOf('"', open + 1);
  while (j > 0) {
    let k = j - 1;
    while (text.charCodeAt(k) === 92 /* \ */) k--;
    if ((j - 1 - k) % 2 === 0) break;
    j = text.indexOf('"', j + 1);
  }
  return j;
}

const ARRAY = 0;

/**
 * The first key repeated within one object, anywhere in a document JSON.parse accepted. Strings
 * are skipped whole (closingQuote); only the structure between them is looked at character by
 * character.
 */
export function duplicateKey(text: string): string | undefined {
  // per open object: null until it has a key, then its first key, then a Set once it has two (most
  // objects are small; a body of many empty objects allocates nothing); arrays are ARRAY
  const stack: (Set<string> | string | null | typeof ARRAY)[] = [];
  let expectKey = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      const j = closingQuote(text, i);
      if (j < 0) return undefined; // JSON.parse accepted it: cannot happen
      if (expectKey) {
        const raw = text.slice(i + 1, j);
        const key = raw.indexOf('\\') >= 0 ? (JSON.parse(text.slice(i, j + 1)) as string) : raw;
        const top = stack.length - 1;
        const seen = stack[top];
        if (seen === null) stack[top] = key;
        else if (typeof seen === 'string') {
          if (seen === key) return key;
          stack[top] = new Set([seen, key]);
        } else if (seen !== ARRAY) {
          if (seen!.has(key)) return key;
          seen!.add(key);
        }
        expectKey = false;
      }
      i = j;
    } else if (c === 123 /* { */) {
      stack.push(null);
      expectKey = true;
    } else if (c === 91 /* [ */) {
      stack.push(ARRAY);
      expectKey = false;
    } else if (c === 125 /* } */ || c === 93 /* ] */) {
      stack.pop();
      expectKey = false;
    } else if (c === 44 /* , */) {
      expectKey = stack.length > 0 && stack[stack.length - 1] !== ARRAY;
    }
  }
  return undefined;
}

function positiveInt(v: unknown): boolean {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
}

export function readAIRequest(body: Buffer, op: AIOperation): AIRequestInfo | AIRequestProblem {
  if (!isUtf8(body)) return problem('not_utf8', 'the request body is not valid UTF-8');
  const text = body.toString('utf8');
  const complex = structureProblem(text);
  if (complex !== undefined) return problem('too_complex', complex);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return problem('invalid_json', `the request body is not valid JSON: ${(e as Error).message.slice(0, 200)}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return problem('invalid_json', 'the request body must be a JSON object');
  const dup = duplicateKey(text);
  if (dup !== undefined) return problem('duplicate_key', `the key "${dup.slice(0, 64)}" appears twice in one object`, dup.slice(0, 64));
  const o = doc as Record<string, unknown>;
  const model = o.model;
  if (typeof model !== 'string' || !MODEL_RE.test(model)) {
    return problem('invalid_field', model === undefined ? 'you must provide a model parameter' : 'model must be a string of at most 256 printable characters without spaces', 'model');
  }
  const stream = o.stream ?? false;
  if (typeof stream !== 'boolean') return problem('invalid_field', 'stream must be a boolean', 'stream');
  if (stream && op === 'embeddings') return problem('invalid_field', 'embeddings do not stream', 'stream');
  let max: number | undefined;
  for (const f of MAX_FIELDS[op]) {
    const v = o[f];
    if (v === undefined || v === null) continue;
    if (!positiveInt(v)) return problem('invalid_field', `${f} must be a positive integer`, f);
    max = Math.max(max ?? 0, v as number);
  }
  let choices = 1;
  for (const f of CHOICE_FIELDS[op]) {
    const v = o[f];
    if (v === undefined || v === null) continue;
    if (!positiveInt(v)) return problem('invalid_field', `${f} must be a positive integer`, f);
    choices = Math.max(choices, v as number);
  }
  const so = o.stream_options;
  if (so !== undefined && so !== null && (typeof so !== 'object' || Array.isArray(so))) return problem('invalid_field', 'stream_options must be an object', 'stream_options');
  const includeUsage = (so as { include_usage?: unknown } | null | undefined)?.include_usage === true;
  const background = op === 'responses' ? (o.background ?? false) : false;
  if (typeof background !== 'boolean') return problem('invalid_field', 'background must be a boolean', 'background');
  return { ok: true, model, stream, maxTokens: max === undefined ? undefined : max * choices, includeUsage, background };
}
