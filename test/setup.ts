/**
 * Runs before every test file (vitest `setupFiles`): points os.tmpdir() at the run's temp root
 * (see test/global-setup.ts) and removes every `tempDir` of the file once its own hooks are done.
 */
import { tmpdir } from 'node:os';
import { afterAll, inject } from 'vitest';
import { removeTempDirs } from './helpers/cli.js';

const root = inject('fleetgateTmpRoot');
if (root) {
  process.env.TMPDIR = root;
  if (tmpdir() !== root) throw new Error(`os.tmpdir() is ${tmpdir()}, not the run's temp root ${root}`);
}

// Registered before the file's own hooks, so it runs after them (after-hooks run in stack order).
afterAll(removeTempDirs);
