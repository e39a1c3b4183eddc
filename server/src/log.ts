/**
 * One logger for the process. Logs are JSON lines on stderr so stdout stays for what a command
 * prints for people and scripts (the `serve` banner, `ca export` PEM, `--json` output).
 */
import { type DestinationStream, type Logger, pino } from 'pino';
import type { LogLevel } from './config.js';
import { containsSecret, redactSecrets } from './redact.js';

export type { Logger };

export function createLogger(level: LogLevel): Logger {
  return pino(
    {
      level,
      base: { svc: 'fleetgate' },
      // Defence in depth: these never belong in a log line.
      redact: {
        paths: [
          '*.keyPem',
          '*.privateKey',
          '*.token',
          '*.password',
          'req.headers.authorization',
          'headers.authorization',
          '*.headers.authorization',
        ],
        censor: '[redacted]',
      },
    },
    redactingStream(pino.destination({ fd: 2, sync: false })),
  );
}

/**
 * Every line passes through redactSecrets before it is written: a bearer secret can reach a log
 * line by many roads (a message quoting caller input, an error's message or stack, a field no
 * redact path names), so the stream is the one place that sees them all.
 */
function redactingStream(
  dest: ReturnType<typeof pino.destination>,
): DestinationStream & { flush(cb?: () => void): void } {
  return {
    write: (line: string) => dest.write(containsSecret(line) ? redactSecrets(line) : line),
    flush: (cb?: () => void) => dest.flush(cb),
  };
}
