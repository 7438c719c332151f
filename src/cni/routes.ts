/**
 * The host-mode agent's CNI API (on its unix socket, beside the agent routes): what membrane-cni
 * calls for ADD, DEL, CHECK, GC and STATUS. Bodies are checked with the zod schemas of
 * src/api/requests.ts. One CNI operation runs at a time (the runtime may call in parallel).
 *
 * ADD stores a Pod for the container (labels from the runtime, annotations naming its netns and
 * interface), lets the reconcile make the network, identity and endpoint, and answers only once
 * the endpoint is `ready` — its policy is in the datapath before the container's first packet,
 * as Cilium's CNI waits for the endpoint's first regeneration. A failed ADD removes what it made.
 */
import type { Pod, Resource } from '../api/types.ts';
import {
  checkWith, cniAddRequestSchema, cniCheckRequestSchema, cniDelRequestSchema, cniExecRequestSchema, cniGcRequestSchema, emptyRequestSchema,
} from '../api/requests.ts';
import type { Agent } from '../agent/agent.ts';
import type { Handler } from '../agent/api-server.ts';
import { ApiRequestError } from '../agent/api-server.ts';
import { valid } from '../agent/routes.ts';
import { ANN_CONTAINER_ID, ANN_IFNAME, ANN_NETNS, type Attachment, type HostProvider } from './host-provider.ts';
import { createSerial } from '../common/serial.ts';
import { containerNetnsRefusal } from '../sys/netlink.ts';
import { cniExec } from './protocol.ts';

const SOURCE = { file: '<cni>', line: 0, col: 0 };

export function cniRoutes(o: { agent: Agent; provider: HostProvider; node: string; dns?: string }): Record<string, Handler> {
  const { agent, provider, node } = o;
  const serial = createSerial();
  const podOf = (a: Pick<Attachment, 'namespace' | 'pod'>): Pod => ({
    apiVersion: 'v1', kind: 'Pod', metadata: { name: a.pod, namespace: a.namespace }, spec: { containers: [{ name: a.pod }] }, source: SOURCE,
  } as Pod);

  async function detach(a: Attachment): Promise<void> {
    await agent.remove([podOf(a)]);
    await agent.idle();
    // a Pod deleted by hand (`membrane delete pod`) left only the network: remove that too
    if (await provider.byContainer(a.containerId, a.ifname)) await provider.networks.remove(podOf(a));
  }

  const routes: Record<string, Handler> = {
    'POST /v1/cni/add': (body) => serial(async () => {
      const r = valid(checkWith(cniAddRequestSchema, body), 'POST /v1/cni/add', 'the body is {containerId, ifname, netns, name, namespace, labels} (src/api/requests.ts cniAddRequestSchema)');
      // before anything is stored: the host's own namespace (or no namespace) never becomes a pod's
      const refused = containerNetnsRefusal(r.netns);
      if (refused) throw new ApiRequestError('CNI_NETNS_INVALID', `container ${r.containerId.slice(0, 12)}: ${refused}`, { hint: 'CNI_NETNS names the container\'s own namespace file, e.g. /run/netns/<name>' });
      // the same name held by another container (its DEL never came): that one goes first
      const cur = (await agent.resources.get('Pod', r.namespace, r.name)) as Pod | undefined;
      if (cur && cur.metadata.annotations?.[ANN_CONTAINER_ID] !== r.containerId) {
        await agent.remove([cur]);
        await agent.idle();
      }
      const pod = {
        apiVersion: 'v1', kind: 'Pod',
        metadata: {
          name: r.name, namespace: r.namespace, labels: r.labels,
          annotations: { [ANN_CONTAINER_ID]: r.containerId, [ANN_NETNS]: r.netns, [ANN_IFNAME]: r.ifname },
        },
        spec: { nodeName: node, containers: [{ name: r.name }] },
        source: SOURCE,
      } as Pod;
      const batch: Resource[] = [pod];
      if (!(await agent.resources.get('Namespace', undefined, r.namespace))) {
        batch.unshift({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: r.namespace }, source: SOURCE } as Resource);
      }
      await agent.apply(batch, false);
      await agent.idle();
      const ep = agent.endpointTable().get(r.namespace, r.name);
      const view = ep && agent.endpoints().find((e) => e.id === ep.id);
      if (!ep || view?.state !== 'ready') {
        const why = agent.lastErrors().filter((l) => l.includes(`${r.namespace}/${r.name}`)).at(-1) ?? 'the endpoint did not become ready';
        await agent.remove([pod]).catch(() => {});
        await agent.idle().catch(() => {});
        throw new ApiRequestError('CNI_ENDPOINT_FAILED', `container ${r.containerId.slice(0, 12)} (${r.namespace}/${r.name}): ${why}; nothing was left behind`, { hint: '`membrane status` shows the agent\'s recent errors' });
      }
      return {
        ip: ep.ip, gateway: provider.pool.gateway, mac: ep.mac, hostIfname: ep.hostIfname,
        endpointId: ep.id, identity: ep.identity, ...(o.dns ? { dns: o.dns } : {}),
      };
    }),
    'POST /v1/cni/del': (body) => serial(async () => {
      const r = valid(checkWith(cniDelRequestSchema, body), 'POST /v1/cni/del', 'the body is {containerId, ifname}');
      const a = await provider.byContainer(r.containerId, r.ifname);
      // DEL is idempotent: an unknown container is already gone
      if (!a) return { removed: false };
      await detach(a);
      return { removed: true };
    }),
    'POST /v1/cni/check': (body) => serial(async () => {
      const r = valid(checkWith(cniCheckRequestSchema, body), 'POST /v1/cni/check', 'the body is {containerId, ifname, netns}');
      const a = await provider.byContainer(r.containerId, r.ifname);
      if (!a) throw new ApiRequestError('CNI_UNKNOWN_CONTAINER', `container ${r.containerId.slice(0, 12)} (${r.ifname}) is not attached on node ${node}`, { hint: 'ADD it first' });
      const problems = await provider.verify({ ...a, netns: r.netns });
      const ep = agent.endpointTable().get(a.namespace, a.pod);
      const view = ep && agent.endpoints().find((e) => e.id === ep.id);
      if (!ep) problems.push(`endpoint ${a.namespace}/${a.pod} is missing`);
      else if (view?.state !== 'ready') problems.push(`endpoint ${ep.id} is ${view?.state ?? 'unknown'}, not ready`);
      if (problems.length) throw new ApiRequestError('CNI_ATTACHMENT_BROKEN', `container ${r.containerId.slice(0, 12)}: ${problems.join('; ')}`, { hint: 'the runtime can DEL and ADD the container again', issues: problems });
      return { ok: true, endpointId: ep!.id };
    }),
    'POST /v1/cni/gc': (body) => serial(async () => {
      const r = valid(checkWith(cniGcRequestSchema, body), 'POST /v1/cni/gc', 'the body is {valid: [{containerId, ifname}...]}');
      const keep = new Set(r.valid.map((v) => `${v.containerId}/${v.ifname}`));
      const removed: string[] = [];
      for (const a of await provider.attachments()) {
        if (keep.has(`${a.containerId}/${a.ifname}`)) continue;
        await detach(a);
        removed.push(a.containerId);
      }
      return { removed };
    }),
    'POST /v1/cni/status': async (body) => {
      valid(checkWith(emptyRequestSchema, body), 'POST /v1/cni/status', 'send no body, or {}');
      return { ready: true, podCidr: provider.pool.cidr, attachments: (await provider.attachments()).length };
    },
  };
  // membrane-cni's one call: the runtime's variables and stdin, answered as the plugin prints it
  routes['POST /v1/cni/exec'] = async (body) => {
    const r = valid(checkWith(cniExecRequestSchema, body), 'POST /v1/cni/exec', 'the body is {command, containerId?, netns?, ifname?, args?, path?, stdin} (src/api/requests.ts cniExecRequestSchema)');
    return cniExec(r, (path, b) => {
      const route = routes[`POST ${path}`];
      if (!route) throw new ApiRequestError('API_NOT_FOUND', `no route POST ${path}`);
      return route(b, new URLSearchParams());
    });
  };
  return routes;
}
