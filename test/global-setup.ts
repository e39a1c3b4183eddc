/**
 * One fresh temp root per `vitest run`: every test, helper and spawned child (servers, openssl,
 * softhsm2, swtpm, mosquitto, initdb) finds it through TMPDIR, which os.tmpdir() and the system
 * tools read. At the end of the run anything left in it is a leak: the run fails (exit code 1)
 * with the list.
 *
 * Vitest 4 builds each fork's environment from process.env when it starts the workers, after
 * global setup, so TMPDIR set here reaches them; test/setup.ts also sets it from `inject` and
 * checks it, so a change in that behaviour fails loudly instead of leaking into /tmp.
 */
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    fleetgateTmpRoot: string;
  }
}

let root: string | undefined;

export function setup(project: TestProject): void {
  root = mkdtempSync(path.join(tmpdir(), 'fleetgate-test-run-'));
  // Other users need to traverse it: the private PostgreSQL cluster runs as `postgres`, mosquitto
  // drops to `mosquitto`. Each test's own dir is still mkdtemp's 0700.
  chmodSync(root, 0o755);
  process.env.TMPDIR = root;
  project.provide('fleetgateTmpRoot', root);
}

export function teardown(): void {
  if (!root) return;
  const left = readdirSync(root);
  rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  if (left.length > 0) {
    // Vitest 4 only logs an error thrown by a global teardown ("error during close") and still
    // exits 0, so set the exit code ourselves: the run must fail.
    process.exitCode = 1;
    throw new Error(
      `the test suite left ${left.length} entr${left.length === 1 ? 'y' : 'ies'} in its temp root ` +
        `(each test must remove what it creates, even on failure):\n  ${left.sort().join('\n  ')}`,
    );
  }
}
