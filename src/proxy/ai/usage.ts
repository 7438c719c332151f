/**
 * Token usage of a response, read as its payload passes to the client (never held back):
 *
 *   JSON      OpenAI `usage` {prompt_tokens, completion_tokens} (chat, completions, embeddings),
 *             `usage` {input_tokens, output_tokens} (responses); Anthropic `usage`
 *             {input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens}
 *   SSE       OpenAI chat/completions: the final chunk's `usage` (stream_options.include_usage);
 *             responses: `response.completed` → `response.usage`; Anthropic: `message_start` →
 *             `message.usage` (input), `message_delta` → `usage` (output, cumulative)
 *
 * The last value of each count wins. When the response carries no usage (a stream without
 * include_usage, a response cut off, a compressed body), the counts are estimated and said to be:
 * prompt ≈ request bytes / 4, output ≈ one token per streamed event or response bytes / 4, at most
 * the request's maximum. Error responses without usage count nothing.
 */
import type { AIApi, AIOperation } from '../../policy/ai.ts';
import type { ResponseObserver } from '../http/stream.ts';
import { JsonCapture } from './json-scan.ts';
import { SseReader, type EventSink } from './sse.ts';

const USAGE_PATHS = [['usage'], ['response', 'usage'], ['message', 'usage']] as const;
/** a document (an SSE event's data, a JSON body) up to this size is copied and parsed natively at its end */
const MAX_BUFFERED = 256 * 1024;
const USAGE_KEY = Buffer.from('"usage"');

/**
 * One JSON document in pieces → its usage objects. Small documents (every SSE event, most JSON
 * bodies) are copied aside and, if they mention `"usage"` at all, parsed with JSON.parse when they
 * end; a larger one (an embeddings list) switches to the incremental JsonCapture so memory stays
 * bounded. Either way the bytes themselves go on to the client untouched.
 */
export class DocReader implements EventSink {
  private readonly onUsage: (u: Record<string, unknown>) => void;
  private parts: Buffer[] = [];
  private bytes = 0;
  private capture: JsonCapture | null = null;

  constructor(onUsage: (u: Record<string, unknown>) => void) {
    this.onUsage = onUsage;
  }

  data(buf: Buffer, start: number, end: number): void {
    if (this.capture) {
      this.capture.feed(buf, start, end);
      return;
    }
    if (this.bytes + end - start > MAX_BUFFERED) {
      const c = (this.capture = new JsonCapture(USAGE_PATHS));
      for (const p of this.parts) c.feed(p, 0, p.length);
      this.parts = [];
      c.feed(buf, start, end);
      return;
    }
    this.parts.push(Buffer.from(buf.subarray(start, end)));
    this.bytes += end - start;
  }

  /** The document ended. */
  event(): void {
    if (this.capture) {
      for (let i = 0; i < USAGE_PATHS.length; i++) {
        const u = this.capture.value(i);
        if (typeof u === 'object' && u !== null) this.onUsage(u as Record<string, unknown>);
      }
      this.capture = null;
    } else if (this.bytes > 0) {
      const doc = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
      if (doc.indexOf(USAGE_KEY) >= 0) {
        let o: unknown;
        try {
          o = JSON.parse(doc.toString('utf8'));
        } catch {
          o = undefined;
        }
        if (typeof o === 'object' && o !== null) {
          const top = o as Record<string, unknown>;
          for (const u of [top.usage, (top.response as Record<string, unknown> | undefined)?.usage, (top.message as Record<string, unknown> | undefined)?.usage]) {
            if (typeof u === 'object' && u !== null && !Array.isArray(u)) this.onUsage(u as Record<string, unknown>);
          }
        }
      }
    }
    this.parts = [];
    this.bytes = 0;
  }
}

export interface UsageResult {
  promptTokens: number;
  completionTokens: number;
  /** the counts come from the response (else: estimated, or nothing for an error) */
  reported: boolean;
  /** request start → first payload byte, ns (undefined: no payload) */
  firstByteNs?: number;
  /** the response ended normally */
  complete: boolean;
  status: number;
}

export interface UsageReaderOptions {
  api: AIApi;
  operation: AIOperation;
  /** when the request started (process.hrtime.bigint()) */
  startNs: bigint;
  /** request body bytes (the prompt estimate) */
  requestBytes: number;
  /** the request's max output tokens (caps the estimate) */
  maxTokens: number | undefined;
  onEnd(r: UsageResult): void;
}

interface Counts {
  prompt_tokens?: number;
  completion_tokens?: number;
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number;
  cache_read_input_tokens?: number;
}
const FIELDS = ['prompt_tokens', 'completion_tokens', 'input_tokens', 'output_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens'] as const;

export class UsageReader implements ResponseObserver {
  private readonly o: UsageReaderOptions;
  private readonly doc = new DocReader((u) => this.take(u));
  private sse: SseReader | null = null;
  /** the body cannot be read (content-encoding): only its size counts */
  private opaque = false;
  private status = 0;
  private bytes = 0;
  private firstNs: bigint | undefined;
  private readonly counts: Counts = {};
  private ended = false;

  constructor(o: UsageReaderOptions) {
    this.o = o;
  }

  /** The response head: how to read the body. */
  head(status: number, contentType: string | undefined, contentEncoding: string | undefined): void {
    this.status = status;
    this.opaque = !!contentEncoding && contentEncoding.trim().toLowerCase() !== 'identity';
    if (!this.opaque && contentType && contentType.trim().toLowerCase().startsWith('text/event-stream')) {
      this.sse = new SseReader(this.doc);
    }
  }

  data(buf: Buffer, start: number, end: number): void {
    if (this.firstNs === undefined) this.firstNs = process.hrtime.bigint();
    this.bytes += end - start;
    if (this.opaque) return;
    if (this.sse) this.sse.feed(buf, start, end);
    else this.doc.data(buf, start, end);
  }

  end(complete: boolean): void {
    if (this.ended) return;
    this.ended = true;
    if (this.sse) this.sse.finish();
    else if (!this.opaque) this.doc.event();
    const ok = this.status >= 200 && this.status < 300;
    const c = this.counts;
    let prompt: number | undefined;
    let completion: number | undefined;
    if (this.o.api === 'anthropic') {
      if (c.input_tokens !== undefined || c.cache_creation_input_tokens !== undefined || c.cache_read_input_tokens !== undefined) {
        prompt = (c.input_tokens ?? 0) + (c.cache_creation_input_tokens ?? 0) + (c.cache_read_input_tokens ?? 0);
      }
      completion = c.output_tokens;
      // message_start carries a provisional output count: only a finished stream's last count is final
      if (this.sse && !complete) completion = undefined;
    } else {
      prompt = c.prompt_tokens ?? c.input_tokens;
      completion = c.completion_tokens ?? c.output_tokens;
      // embeddings produce no output tokens
      if (this.o.operation === 'embeddings' && prompt !== undefined) completion = 0;
    }
    const reported = prompt !== undefined && completion !== undefined;
    if (!reported && ok) {
      prompt ??= Math.ceil(this.o.requestBytes / 4);
      if (completion === undefined) {
        completion = this.sse ? this.sse.events : Math.ceil(this.bytes / 4);
        if (this.o.maxTokens !== undefined) completion = Math.min(completion, this.o.maxTokens);
      }
    }
    this.o.onEnd({
      promptTokens: prompt ?? 0, completionTokens: completion ?? 0, reported, complete, status: this.status,
      ...(this.firstNs !== undefined ? { firstByteNs: Number(this.firstNs - this.o.startNs) } : {}),
    });
  }

  private take(u: Record<string, unknown>): void {
    for (const f of FIELDS) {
      const v = u[f];
      if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) this.counts[f] = v;
    }
  }
}
