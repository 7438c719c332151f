/**
 * Local answers in the provider's own error shape, so that SDKs surface them as they surface the
 * provider's (openai-python raises PermissionDeniedError / RateLimitError with the message;
 * anthropic-sdk the same), with the status codes their retry logic understands:
 *
 *   OpenAI     {"error": {"message", "type", "param", "code"}}
 *   Anthropic  {"type": "error", "error": {"type", "message"}}
 *
 * 429 answers carry Retry-After (seconds) and the provider's rate-limit headers.
 */
import type { AIApi } from '../../policy/ai.ts';

export type AIErrorKind = 'forbidden' | 'rate_limit' | 'invalid' | 'too_large';

const STATUS: Record<AIErrorKind, number> = { forbidden: 403, rate_limit: 429, invalid: 400, too_large: 413 };
const ANTHROPIC_TYPE: Record<AIErrorKind, string> = {
  forbidden: 'permission_error', rate_limit: 'rate_limit_error', invalid: 'invalid_request_error', too_large: 'request_too_large',
};

export interface AIErrorReply {
  status: number;
  body: string;
  headers: string[];
}

export interface AIRateInfo {
  /** `tokens` or `requests` */
  unit: 'tokens' | 'requests';
  limit: number;
  remaining: number;
  /** epoch ms when the window ends */
  resetAt: number;
  now: number;
}

/** `3h2m5s` (OpenAI's reset format). */
function duration(ms: number): string {
  let s = Math.max(1, Math.ceil(ms / 1000));
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s || (!h && !m) ? `${s}s` : ''}`;
}

export function aiErrorReply(api: AIApi, kind: AIErrorKind, message: string, opts: { code?: string; param?: string; rate?: AIRateInfo } = {}): AIErrorReply {
  const status = STATUS[kind];
  const headers: string[] = [];
  const r = opts.rate;
  if (r) {
    const secs = Math.max(1, Math.ceil((r.resetAt - r.now) / 1000));
    headers.push('retry-after', String(secs));
    if (api === 'openai') {
      headers.push(`x-ratelimit-limit-${r.unit}`, String(r.limit), `x-ratelimit-remaining-${r.unit}`, String(Math.max(0, r.remaining)), `x-ratelimit-reset-${r.unit}`, duration(r.resetAt - r.now));
    } else {
      const unit = r.unit === 'tokens' ? 'tokens' : 'requests';
      headers.push(`anthropic-ratelimit-${unit}-limit`, String(r.limit), `anthropic-ratelimit-${unit}-remaining`, String(Math.max(0, r.remaining)),
        `anthropic-ratelimit-${unit}-reset`, new Date(r.resetAt).toISOString().replace(/\.\d{3}Z$/, 'Z'));
    }
  }
  let body: string;
  if (api === 'openai') {
    const type = kind === 'rate_limit' ? (r?.unit ?? 'requests') : 'invalid_request_error';
    body = JSON.stringify({ error: { message, type, param: opts.param ?? null, code: opts.code ?? (kind === 'rate_limit' ? 'rate_limit_exceeded' : null) } });
  } else {
    body = JSON.stringify({ type: 'error', error: { type: ANTHROPIC_TYPE[kind], message } });
  }
  return { status, body, headers };
}
