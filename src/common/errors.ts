/**
 * One error type for the whole project: a stable code, a one-line message that says what and
 * where, and a hint. Codes are never reused once published (fastify's rule).
 */
export class MembraneError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'MembraneError';
    this.code = code;
    this.hint = opts.hint;
  }
}

/** Where a thing came from in the user's files: used by validation errors and by policy trace. */
export interface SourceRef {
  file: string;
  line: number;
  col: number;
}

/** One validation problem. A resource with any issue changes nothing. */
export interface Issue {
  code: string;
  message: string;
  /** YAML path, e.g. ['spec', 'egress', 0, 'toPorts', 0, 'ports', 0, 'port'] */
  path: (string | number)[];
  file: string;
  line: number;
  col: number;
  hint?: string;
}

export function formatIssue(i: Issue): string {
  const p = i.path.length ? i.path.map((s) => (typeof s === 'number' ? `[${s}]` : `.${s}`)).join('').replace(/^\./, '') : '(document)';
  return `${i.file}:${i.line}:${i.col}: ${i.code}: ${p}: ${i.message}${i.hint ? `\n  hint: ${i.hint}` : ''}`;
}
