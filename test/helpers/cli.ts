/**
 * Runs the real `fleetgate` CLI (the compiled bin, as users run it) in a child process.
 * `npm test` builds first (pretest), so dist/ is current.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const FLEETGATE_BIN = path.join(REPO_ROOT, 'server/bin/fleetgate.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * A clean environment: no inherited FLEETGATE_* or DATABASE_URL unless given. The broker runs in
 * the serve process (FLEETGATE_WORKERS=1) unless a test asks for workers.
 */
export function cliEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('FLEETGATE_') && k !== 'DATABASE_URL' && k !== 'REDIS_URL') env[k] = v;
  }
  env.FLEETGATE_LOG_LEVEL = 'warn';
  env.FLEETGATE_WORKERS = '1';
  // The plain-HTTP CRL/OCSP listener defaults to port 8080: any free port, so servers run side by side.
  env.FLEETGATE_PKI_HTTP_PORT = '0';
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/**
 * Every directory `tempDir` made in this test file. test/setup.ts removes them in an `afterAll`
 * that runs after the file's own hooks (vitest runs after-hooks in stack order), so a failing
 * test leaves nothing behind and servers using a dir are stopped before it goes.
 */
const madeDirs = new Set<string>();

export function tempDir(prefix = 'fleetgate-test-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  madeDirs.add(dir);
  return dir;
}

/** Removes every directory `tempDir` made so far (called by test/setup.ts after each file). */
export function removeTempDirs(): void {
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  madeDirs.clear();
}

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  /** Run under `ulimit -f` of this many KiB (writes past it fail with EFBIG). */
  fileSizeLimitKiB?: number;
}

/** Runs a Node.js bin of this repository (as users run it) in a child process. */
export function runBin(
  bin: string,
  args: string[],
  env: Record<string, string | undefined> = {},
  opts: RunOptions = {},
): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const name = path.basename(bin, '.js');
  // With a file size limit the bin runs under bash's `ulimit -f` (KiB), as a user would hit a full disk.
  const [command, argv] =
    opts.fileSizeLimitKiB === undefined
      ? [process.execPath, [bin, ...args]]
      : ['bash', ['-c', `ulimit -f ${opts.fileSizeLimitKiB}; exec "$0" "$@"`, process.execPath, bin, ...args]];
  const child = spawn(command, argv, { env: cliEnv(env), cwd: REPO_ROOT });
  const result = collectOutput(child, `${name} ${args.join(' ')}`, timeoutMs);
  if (opts.input !== undefined) child.stdin.end(opts.input);
  else child.stdin.end();
  return result;
}

/**
 * The exit code and whole output of a spawned child (stdout and stderr piped); after `timeoutMs`
 * it is killed and the promise rejects with `label` and what it wrote so far.
 */
export function collectOutput(child: ChildProcess, label: string, timeoutMs: number): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => {
      stdout += d;
    });
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${label} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export function runCli(
  args: string[],
  env: Record<string, string | undefined> = {},
  opts: RunOptions = {},
): Promise<CliResult> {
  return runBin(FLEETGATE_BIN, args, env, opts);
}

export interface ServeHandle {
  child: ChildProcess;
  apiUrl: string;
  banner: string;
  stdout(): string;
  stderr(): string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `fleetgate serve` and resolves once its banner is printed. */
export function startServe(env: Record<string, string | undefined>, timeoutMs = 90_000): Promise<ServeHandle> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FLEETGATE_BIN, 'serve'], {
      env: cliEnv({ FLEETGATE_API_PORT: '0', FLEETGATE_MQTT_PORT: '0', ...env }),
      cwd: REPO_ROOT,
    });
    let stdout = '';
    let stderr = '';
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`serve did not start in ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.includes('Press Ctrl+C to stop.')) {
        clearTimeout(timer);
        const apiUrl = /API \(HTTPS\)\s+(\S+)/.exec(stdout)?.[1];
        if (!apiUrl) return reject(new Error(`no API URL in banner:\n${stdout}`));
        resolve({
          child,
          apiUrl,
          banner: stdout,
          stdout: () => stdout,
          stderr: () => stderr,
          stop: async (signal = 'SIGTERM') => {
            if (child.exitCode === null) child.kill(signal);
            return exited;
          },
        });
      }
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!stdout.includes('Press Ctrl+C to stop.')) {
        reject(new Error(`serve exited with ${code} before starting\nstdout:\n${stdout}\nstderr:\n${stderr}`));
      }
    });
  });
}
