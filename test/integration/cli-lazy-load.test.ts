/**
 * The CLI loads a command's module only when that command runs (issue 16 item 5): the overview,
 * a command's --help and an API command such as `devices list` never load the server (fastify,
 * aedes, PGlite, the CA). Checked by the modules Node actually loads, recorded by a module hook,
 * not by timing.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cliEnv, FLEETGATE_BIN, REPO_ROOT, tempDir } from '../helpers/cli.js';

/** Runs the compiled CLI and returns its result and every module URL Node loaded for it. */
function runRecorded(args: string[]): { code: number | null; stdout: string; stderr: string; loaded: string[] } {
  const dir = tempDir('fg-cli-load-');
  const log = path.join(dir, 'loaded.txt');
  writeFileSync(log, '');
  // Module hooks run on their own thread in Node 20: they append to a file.
  const hooks = path.join(dir, 'hooks.mjs');
  writeFileSync(
    hooks,
    `import { appendFileSync } from 'node:fs';
export async function load(url, context, next) {
  appendFileSync(${JSON.stringify(log)}, url + '\\n');
  return next(url, context);
}
`,
  );
  const register = path.join(dir, 'register.mjs');
  writeFileSync(
    register,
    `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`,
  );
  const r = spawnSync(process.execPath, ['--import', pathToFileURL(register).href, FLEETGATE_BIN, ...args], {
    cwd: REPO_ROOT,
    env: cliEnv({ FLEETGATE_DATA_DIR: path.join(dir, 'no-data-dir') }),
    encoding: 'utf8',
    timeout: 60_000,
  });
  const loaded = readFileSync(log, 'utf8').split('\n').filter(Boolean);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, loaded };
}

/** What only the server needs: none of it may load for the commands below. */
const SERVER_ONLY = [
  /\/server\/dist\/main\.js$/,
  /\/server\/dist\/cli\/serve\.js$/,
  /\/server\/dist\/ca\//,
  /\/server\/dist\/http\//,
  /\/server\/dist\/mqtt\//,
  /\/server\/dist\/store\//,
  /\/node_modules\/(fastify|aedes|@electric-sql\/pglite|postgres|pkijs|@peculiar)\//,
];

function serverModules(loaded: string[]): string[] {
  return loaded.filter((url) => SERVER_ONLY.some((re) => re.test(url)));
}

describe('the CLI loads only the command that runs', () => {
  it('--help lists every command without loading any command module', () => {
    const r = runRecorded(['--help']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('devices list');
    expect(r.stdout).toContain('serve');
    // The hook sees the CLI's own modules (else the checks below would prove nothing).
    expect(r.loaded.some((u) => u.endsWith('/server/dist/cli/main.js'))).toBe(true);
    expect(serverModules(r.loaded)).toEqual([]);
    expect(
      r.loaded.filter((u) => /\/server\/dist\/cli\/(devices|tokens|service|operators|revoke)\.js$/.test(u)),
    ).toEqual([]);
  });

  it.each(['serve', 'service create', 'devices list'])('%s --help does not load the server', (command) => {
    const r = runRecorded([...command.split(' '), '--help']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: fleetgate ${command}`));
    expect(serverModules(r.loaded)).toEqual([]);
  });

  it('devices list loads its own module and the API client, not the server', () => {
    // No server runs for this data dir: the command fails after loading what it needs.
    const r = runRecorded(['devices', 'list']);
    expect(r.code).toBe(1);
    expect(r.loaded.some((u) => u.endsWith('/server/dist/cli/devices.js'))).toBe(true);
    expect(serverModules(r.loaded)).toEqual([]);
  });
});

describe('group help', () => {
  it('`fleetgate token --help` shows the token commands (exit 0)', () => {
    const r = runRecorded(['token', '--help']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('Usage: fleetgate token <command>');
    expect(r.stdout).toMatch(/token create\s+create one-time enrollment tokens/);
  });

  it('`fleetgate token` alone is still a usage error naming the choices', () => {
    const r = runRecorded(['token']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('choose one of: create');
  });
});
