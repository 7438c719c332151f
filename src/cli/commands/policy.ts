/** `membrane policy validate|trace`: offline tools over policy files, no lab needed. */
import type { Command } from 'commander';
import { loadPaths, locate } from '../../api/load.ts';
import { policyCheck } from '../../policy/check.ts';
import { formatIssue, MembraneError, type Issue } from '../../common/errors.ts';

const issueKey = (i: Issue) => `${i.code}|${i.file}|${i.line}|${i.col}|${i.message}`;

export function register(program: Command): void {
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
    .requiredOption('-f, --filename <path...>', 'policy and workload files or directories (repeatable)')
    .requiredOption('--from <peer>', 'source: NAMESPACE/POD, POD (namespace default), an IP, or an entity (world, host, ...)')
    .requiredOption('--to <peer>', 'destination: NAMESPACE/POD, POD, an IP, or an entity')
    .requiredOption('--port <port/proto>', 'destination port and protocol, e.g. 80/TCP, 53/UDP, 8/ICMP (ICMP type)')
    .option('--http-method <method>', 'HTTP method, for L7 rules')
    .option('--http-path <path>', 'HTTP path, for L7 rules')
    .option('--http-host <host>', 'HTTP host, for L7 rules')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { filename: string[]; from: string; to: string; port: string; httpMethod?: string; httpPath?: string; httpHost?: string; output?: string }) => {
      const { resources, issues } = await loadPaths(o.filename, { policyCheck });
      if (issues.length) {
        throw Object.assign(new MembraneError('API_INVALID', `${issues.length} problem(s) in the input`, { hint: 'run `membrane policy validate` on the same files' }), { issues });
      }
      const m = /^(\d+)(?:\/(tcp|udp|sctp|icmp|icmpv6|any))?$/i.exec(o.port);
      if (!m) throw new MembraneError('CLI_BAD_PORT', `--port ${o.port}: expected PORT/PROTO such as 80/TCP`, { hint: 'protocols: TCP, UDP, SCTP, ICMP, ICMPv6' });
      const { tracePolicy, formatTrace } = await import('../../policy/trace.ts');
      const http = o.httpMethod || o.httpPath || o.httpHost ? { method: o.httpMethod ?? 'GET', path: o.httpPath ?? '/', host: o.httpHost ?? '' } : undefined;
      const result = tracePolicy({
        resources, locate, from: o.from, to: o.to, port: Number(m[1]), protocol: (m[2] ?? 'TCP').toUpperCase(),
        ...(http ? { http } : {}),
      });
      if (o.output === 'json') process.stdout.write(JSON.stringify(result, null, 2) + '\n');
      else process.stdout.write(formatTrace(result));
    });
}
