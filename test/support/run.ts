/**
 * Runs a command to its end and hands back its exit code and output, never throwing: a test
 * asserts on the code and prints stderr (a killed or timed-out child reads as code 1).
 */
import { execFile } from 'node:child_process';

export interface CommandResult { code: number; stdout: string; stderr: string }

export function runCommand(cmd: string, args: string[], opts: { timeout?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  return new Promise((res) => {
    execFile(cmd, args, { timeout: opts.timeout ?? 30_000, maxBuffer: 64 << 20, ...(opts.env ? { env: opts.env } : {}) }, (err, stdout, stderr) => {
      res({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
    });
  });
}
