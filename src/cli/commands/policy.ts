/**
 * `membrane policy validate|trace`: offline tools over policy files, no lab needed; `trace --node`
 * asks a running lab's agent instead (its resources, the cluster's identities, the names it learnt).
 */
import type { Command } from 'commander';
import type { MembraneConfig } from '../../common/config.ts';
import { loadPaths, locate } from '../../api/load.ts';
import { policyCheck } from '../../policy/check.ts';
import { formatIssue, MembraneError, type Issue } from '../../common/errors.ts';

const issueKey = (i: Issue) => `${i.code}|${i.file}|${i.line}|${i.col}|${i.message}`;

export function register(program: Command, config?: MembraneConfig): void {
  const policy = program.command('policy').description('Validate and explain policies offline');

  policy.command('validate')
    .description('Check policy and workload files; print every problem with file:line:col')
    .argument('<paths...>', 'files or directories (- for stdin)')
    .option('-o, --output <fmt>', 'json')
    .action(async (paths: string[], o: { output?: string }) => {
      const { resources, issues } = await loadPaths(paths, { policyCheck });
      // The repository import catches cross-rule conflicts (e.g. two L7 parsers on one port) that
      // a single document cannot show.
      const { checkImport } = await import('../../policy/trace.ts');
      const known = new Set(issues.map(issueKey));
      for (const i of checkImport(resources, { locate })) if (!known.has(issueKey(i))) { known.add(issueKey(i)); issues.push(i); }
      if (o.output === 'json') {
        process.stdout.write(JSON.stringify({ valid: issues.length === 0, resources: resources.length, issues }, null, 2) + '\n');
      } else {
        for (const i of issues) process.stderr.write(`error: ${formatIssue(i)}\n`);
        const policies = resources.filter((r) => /NetworkPolicy$/.test(r.kind)).length;
        if (issues.length === 0) process.stdout.write(`${resources.length} resource(s) valid (${policies} polic${policies === 1 ? 'y' : 'ies'})\n`);
        else process.stderr.write(`${issues.length} problem(s) found\n`);
      }
      if (issues.length) process.exitCode = 1;
    });

  policy.command('trace')
    .description('Explain the verdict for one connection: which rule of which file allowed or denied it')
    .option('-f, --filename <path...>', 'policy and workload files or directories (repeatable); with --node, traced as if applied')
    .option('--node <name>', 'trace in the running lab with this node\'s agent: the stored resources, the cluster\'s identity numbers and the names it learnt (ask the node that enforces: the destination\'s for ingress, the source\'s for egress)')
    .requiredOption('--from <peer>', 'source: NAMESPACE/POD, POD (namespace default), an IP, or an entity (world, host, ...)')
    .requiredOption('--to <peer>', 'destination: NAMESPACE/POD, POD, an IP, or an entity')
    .requiredOption('--port <port/proto>', 'destination port and protocol, e.g. 80/TCP, 53/UDP, 8/ICMP (ICMP type)')
    .option('--http-method <method>', 'HTTP method, for L7 rules')
    .option('--http-path <path>', 'HTTP path, for L7 rules')
    .option('--http-host <host>', 'HTTP host, for L7 rules (the provider host, with --model)')
    .option('--model <model>', 'an AI call with this model: AIPolicies are traced too (method POST and the provider\'s call path unless given)')
    .option('--stream', 'the AI call asks for a stream')
    .option('--max-tokens <n>', 'the AI call\'s max output tokens')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { filename?: string[]; node?: string; from: string; to: string; port: string; httpMethod?: string; httpPath?: string; httpHost?: string; model?: string; stream?: boolean; maxTokens?: string; output?: string }) => {
      if (!o.filename?.length && o.node === undefined) throw new MembraneError('CLI_USAGE', 'policy trace needs -f FILES (offline) or --node NODE (a running lab)', { hint: 'e.g. -f examples/quickstart/, or --node node1' });
      const { resources, issues } = await loadPaths(o.filename ?? [], { policyCheck });
      if (issues.length) {
        throw Object.assign(new MembraneError('API_INVALID', `${issues.length} problem(s) in the input`, { hint: 'run `membrane policy validate` on the same files' }), { issues });
      }
      const m = /^(\d+)(?:\/(tcp|udp|sctp|icmp|icmpv6|any))?$/i.exec(o.port);
      if (!m) throw new MembraneError('CLI_BAD_PORT', `--port ${o.port}: expected PORT/PROTO such as 80/TCP`, { hint: 'protocols: TCP, UDP, SCTP, ICMP, ICMPv6' });
      if (o.node !== undefined) {
        if (o.model !== undefined) throw new MembraneError('CLI_USAGE', '--model traces files only, not with --node', { hint: 'give the AIPolicy files with -f and no --node' });
        const { callAgent } = await import('../../agent/api-client.ts');
        const { agentSocketFor } = await import('../lab-target.ts');
        const { buildConfig } = await import('../../common/config.ts');
        const http = o.httpMethod || o.httpPath || o.httpHost ? { method: o.httpMethod ?? 'GET', path: o.httpPath ?? '/', host: o.httpHost ?? '' } : undefined;
        const res = await callAgent<import('../../agent/policy-api.ts').TraceResponse>(agentSocketFor(config ?? buildConfig(), o.node), 'POST', '/v1/policy/trace', {
          from: o.from, to: o.to, port: Number(m[1]), protocol: (m[2] ?? 'TCP').toUpperCase(),
          ...(http ? { http } : {}), ...(resources.length ? { with: resources.map(({ source: _s, ...r }) => r) } : {}),
        });
        process.stdout.write(o.output === 'json' ? JSON.stringify(res.trace, null, 2) + '\n' : res.text);
        return;
      }
      const { tracePolicy, formatTrace } = await import('../../policy/trace.ts');
      if (o.model !== undefined && !o.httpHost) throw new MembraneError('TRACE_AI_HOST', '--model needs --http-host: the provider host the call goes to', { hint: 'e.g. --http-host api.openai.com' });
      const maxTokens = o.maxTokens === undefined ? undefined : Number(o.maxTokens);
      if (maxTokens !== undefined && !(Number.isSafeInteger(maxTokens) && maxTokens > 0)) throw new MembraneError('TRACE_AI_MAX_TOKENS', `--max-tokens ${o.maxTokens}: expected a positive integer`);
      const ai = o.model === undefined ? undefined : await import('../../policy/ai-trace.ts');
      const aiIn = (source: Parameters<NonNullable<typeof ai>['traceAI']>[0]['source']) => ({
        resources, locate, source, host: o.httpHost!, model: o.model!, ...(o.httpMethod ? { method: o.httpMethod } : {}), ...(o.httpPath ? { path: o.httpPath } : {}),
        ...(o.stream ? { stream: true } : {}), ...(maxTokens !== undefined ? { maxTokens } : {}),
      });
      const traceWith = (http?: { method: string; path: string; host: string }) => tracePolicy({
        resources, locate, from: o.from, to: o.to, port: Number(m[1]), protocol: (m[2] ?? 'TCP').toUpperCase(),
        ...(http ? { http } : {}),
      });
      let http = o.httpMethod || o.httpPath || o.httpHost ? { method: o.httpMethod ?? 'GET', path: o.httpPath ?? '/', host: o.httpHost ?? '' } : undefined;
      let result = traceWith(http);
      let aiResult: import('../../policy/ai-trace.ts').AITrace | undefined;
      if (ai) {
        // the AI call's method and path (the provider's, unless given) are what the L7 rules judge too
        const first = ai.traceAI(aiIn(result.source));
        http = { method: first.method, path: first.path, host: o.httpHost! };
        result = traceWith(http);
        aiResult = ai.traceAI({ ...aiIn(result.source), network: result });
      }
      if (o.output === 'json') process.stdout.write(JSON.stringify(aiResult ? { ...result, ai: aiResult } : result, null, 2) + '\n');
      else process.stdout.write(formatTrace(result) + (aiResult ? `\n${ai!.formatAITrace(aiResult)}` : ''));
    });
}
