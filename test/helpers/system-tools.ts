/**
 * Tests that need a system tool (openssl, curl, mosquitto clients, softhsm2, swtpm) call
 * requireTool(). Locally a missing tool skips those checks with a loud warning; in CI
 * (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1) a missing tool fails the run, so nothing is skipped silently.
 */
import { spawnSync } from 'node:child_process';

const cache = new Map<string, boolean>();

export function hasTool(name: string): boolean {
  let found = cache.get(name);
  if (found === undefined) {
    found = spawnSync('sh', ['-c', `command -v ${JSON.stringify(name)}`], { stdio: 'ignore' }).status === 0;
    cache.set(name, found);
  }
  return found;
}

export function requireTool(name: string): boolean {
  if (hasTool(name)) return true;
  if (process.env.FLEETGATE_REQUIRE_SYSTEM_TOOLS === '1') {
    throw new Error(`${name} is required (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1) but not installed`);
  }
  console.warn(
    `\n!!! ${name} is not installed: tests that need it are SKIPPED here (CI installs it and runs them) !!!\n`,
  );
  return false;
}
