/**
 * One logger for the process. Logs are JSON lines on stderr so stdout stays for what a command
 * prints for people and scripts (the `serve` banner, `ca export` PEM, `--json` output).
 */
import { type Logger, pino } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

export function createLogger(level: LogLevel): Logger {
  return pino(
    {
      level,
      base: { svc: 'fleetgate' },
      // Defence in depth: these never belong in a log line.
      redact: {
        paths: ['*.keyPem', '*.privateKey', '*.token', '*.password', 'req.headers.authorization'],
        censor: '[redacted]',
      },
    },
    pino.destination({ fd: 2, sync: false }),
  );
}
