/**
 * The browser's flow API: Hubble's Observer service (GetFlows, ServerStatus, GetNodes,
 * GetNamespaces) answered by forwarding each call to ONE upstream Observer endpoint: a node's
 * hubble socket in the lab today, the Relay's address on a cluster. Filters, positioning and
 * field masks are the upstream's (src/hubble/filter.ts, observer.ts): the bridge only relays.
 * The agent and debug event streams are not offered to the browser.
 */
import type { Client } from '@connectrpc/connect';
import { Code, ConnectError, type ServiceImpl } from '@connectrpc/connect';
import { Observer } from '../hubble/gen/observer/observer_pb.js';
import { observerClient, formatTarget, type ServerTarget } from '../hubble/client.ts';
import { MembraneError } from '../errors.ts';

/** More than the largest ring (Hubble's 65535) is never useful and only costs the upstream. */
export const MAX_FLOWS_PER_REQUEST = 65_535n;

export interface ObserverUpstream {
  target: ServerTarget;
  client(): Client<typeof Observer>;
}

export function observerUpstream(target: ServerTarget): ObserverUpstream {
  let client: Client<typeof Observer> | undefined;
  return {
    target,
    client() {
      // Created on first use: the lab may come up after the UI server.
      try {
        client ??= observerClient(target);
      } catch (e) {
        if (e instanceof MembraneError) throw new ConnectError(`${e.message} (${e.hint ?? ''})`, Code.Unavailable);
        throw e;
      }
      return client;
    },
  };
}

export function observerBridge(up: ObserverUpstream): Partial<ServiceImpl<typeof Observer>> {
  const where = formatTarget(up.target);
  const relay = <T>(p: Promise<T>): Promise<T> => p.catch((e: unknown) => {
    const ce = ConnectError.from(e);
    if (ce.code === Code.Unavailable) throw new ConnectError(`flow API at ${where} unavailable: ${ce.rawMessage}`, Code.Unavailable);
    throw ce;
  });
  return {
    async *getFlows(req, ctx) {
      if (req.number > MAX_FLOWS_PER_REQUEST) req.number = MAX_FLOWS_PER_REQUEST;
      const stream = up.client().getFlows(req, { signal: ctx.signal });
      try {
        for await (const r of stream) yield r;
      } catch (e) {
        if (ctx.signal.aborted) return;
        const ce = ConnectError.from(e);
        throw ce.code === Code.Unavailable ? new ConnectError(`flow API at ${where} unavailable: ${ce.rawMessage}`, Code.Unavailable) : ce;
      }
    },
    serverStatus: (req, ctx) => relay(up.client().serverStatus(req, { signal: ctx.signal })),
    getNodes: (req, ctx) => relay(up.client().getNodes(req, { signal: ctx.signal })),
    getNamespaces: (req, ctx) => relay(up.client().getNamespaces(req, { signal: ctx.signal })),
  };
}
