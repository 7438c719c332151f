/** Structured logs: one JSON object per line with `subsys`, as Cilium does (pino). */
import pino from 'pino';

export type Logger = pino.Logger;

/** `level` comes from the configuration (logLevel); default info. */
export function createLogger(opts: { level?: string; destination?: string } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: ['authorization', 'cookie', '*.authorization', '*.cookie', '*.privateKey', '*.key'],
    },
    opts.destination ? pino.destination({ dest: opts.destination, sync: false, mkdir: true }) : undefined,
  );
}
