/**
 * Small wrapper around the system `openssl` (3.x) for interop tests: a temp dir per use, files in
 * and out, commands run with execFile (no shell). If openssl is missing the suites that need it
 * are not run - loudly - unless FLEETGATE_REQUIRE_SYSTEM_TOOLS=1, in which case they fail.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './cli.js';

function detect(): string | null {
  const r = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return null;
  return r.stdout.trim();
}

export const opensslVersion: string | null = detect();

/** `openssl req` options for a new unencrypted P-256 key (the keys fleetgate issues for by default). */
export const NEW_P256_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'] as const;

/**
 * True when openssl-backed tests can run. When they cannot: warns (and returns false), or throws if
 * FLEETGATE_REQUIRE_SYSTEM_TOOLS=1 so CI cannot silently lose coverage.
 */
export function opensslAvailable(suite: string): boolean {
  if (opensslVersion !== null) return true;
  const message = `openssl not found on PATH: ${suite} cannot run`;
  if (process.env.FLEETGATE_REQUIRE_SYSTEM_TOOLS === '1') {
    throw new Error(`${message} (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1)`);
  }
  console.warn(
    `\n!!!!!!!!!! ${message}; SKIPPING. Install openssl 3 or set FLEETGATE_REQUIRE_SYSTEM_TOOLS=1 to fail. !!!!!!!!!!\n`,
  );
  return false;
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

export class OpensslDir {
  readonly dir: string;

  constructor(prefix = 'fleetgate-openssl-') {
    this.dir = tempDir(prefix);
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  write(name: string, data: string | Uint8Array): string {
    const p = this.path(name);
    writeFileSync(p, data);
    return p;
  }

  read(name: string): Buffer {
    return readFileSync(this.path(name));
  }

  readText(name: string): string {
    return readFileSync(this.path(name), 'utf8');
  }

  /** Runs `openssl ...args` in the temp dir; never throws on a non-zero exit. */
  run(args: string[], input?: string | Uint8Array): RunResult {
    const r = spawnSync('openssl', args, { cwd: this.dir, input, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
    if (r.error) throw r.error;
    return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  /** Runs and throws with the full output when openssl fails. */
  ok(args: string[], input?: string | Uint8Array): RunResult {
    const r = this.run(args, input);
    if (r.status !== 0) {
      throw new Error(`openssl ${args.join(' ')} exited ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    }
    return r;
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
