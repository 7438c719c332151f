/** The UI server's JSON API (src/ui/api.ts): read-only questions for the agent. */
import type { WhyResponse } from '../../src/ui/api.ts';
import type { EndpointPolicyView } from '../../src/agent/policy-api.ts';
import type { EndpointView } from '../../src/agent/views.ts';
import type { WhyQuery } from './model/rows.ts';

export type { WhyResponse, EndpointPolicyView, EndpointView };

export class ApiError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, hint?: string) {
    super(message);
    this.code = code;
    this.hint = hint;
  }
}

async function call<T>(method: 'GET' | 'POST', path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const res = await fetch(path, {
    method, ...(signal ? { signal } : {}),
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  const data = (await res.json().catch(() => ({ code: 'UI_BAD_RESPONSE', message: `HTTP ${res.status}` }))) as T & { code?: string; message?: string; hint?: string };
  if (!res.ok) throw new ApiError(data.code ?? 'UI_ERROR', data.message ?? `HTTP ${res.status}`, data.hint);
  return data;
}

export const api = {
  info: () => call<{ observer: string; lab?: string; node?: string }>('GET', '/api/v1/info'),
  endpoints: () => call<{ items: EndpointView[] }>('GET', '/api/v1/endpoints'),
  why: (q: WhyQuery, signal?: AbortSignal) => call<WhyResponse>('POST', '/api/v1/why', q, signal),
  endpointPolicy: (namespace: string, pod: string, signal?: AbortSignal) =>
    call<EndpointPolicyView>('GET', `/api/v1/endpoint/policy?namespace=${encodeURIComponent(namespace)}&pod=${encodeURIComponent(pod)}`, undefined, signal),
};
