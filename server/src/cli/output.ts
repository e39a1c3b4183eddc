/** How the CLI talks to people: results on stdout, problems on stderr, fixed exit codes. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

export function err(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** A SHA-256 hex fingerprint as OpenSSL prints it (AA:BB:...), so people can compare by eye. */
export function colonHex(hex: string): string {
  return (hex.toUpperCase().match(/../g) ?? []).join(':');
}
