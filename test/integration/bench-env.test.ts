/**
 * The benchmark does not depend on the caller's shell: whatever FLEETGATE_*, DATABASE_URL,
 * REDIS_URL, PG*, OPENSSL_CONF or NODE_OPTIONS the caller exported, every child the benchmark
 * starts (bench/lib.mjs: `fleetgate serve`, the CLI, mosquitto, the floor servers) gets exactly the
 * environment the benchmark sets.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, tempDir } from '../helpers/cli.js';

interface BenchLib {
  childEnv(set?: Record<string, string>, from?: NodeJS.ProcessEnv): Record<string, string>;
  startServe(env: Record<string, string>): Promise<{ apiUrl: string; stop(): Promise<number | null> }>;
  cli(args: string[], env: Record<string, string>): Promise<string>;
}
// A path, not a literal specifier: bench/ is plain JavaScript without type declarations.
const libUrl = pathToFileURL(path.join(REPO_ROOT, 'bench/lib.mjs')).href;
const lib = (await import(libUrl)) as BenchLib;

const CALLER = {
  FLEETGATE_DATA_DIR: '/nonexistent/caller-data',
  FLEETGATE_API_PORT: '1',
  FLEETGATE_MQTT_PORT: '2',
  FLEETGATE_WORKERS: '7',
  DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
  REDIS_URL: 'redis://127.0.0.1:1',
  PGHOST: 'nowhere.invalid',
  OPENSSL_CONF: '/nonexistent/openssl.cnf',
  NODE_OPTIONS: '--max-old-space-size=16',
};

describe('bench/lib.mjs child environment', () => {
  it('drops what the caller set for fleetgate, PostgreSQL, Redis, OpenSSL and Node; keeps the rest; adds what the benchmark sets', () => {
    const env = lib.childEnv({ FLEETGATE_DATA_DIR: '/bench/data' }, { ...CALLER, PATH: '/usr/bin', HOME: '/root' });
    expect(env).toEqual({ PATH: '/usr/bin', HOME: '/root', FLEETGATE_DATA_DIR: '/bench/data' });
  });

  const saved: Record<string, string | undefined> = {};
  const dirs: string[] = [];
  afterAll(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('starts serve and runs the CLI as the benchmark means to with the caller exporting other values', async () => {
    for (const [k, v] of Object.entries(CALLER)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
    // The benchmark's own admin database URL is not under test here: the server runs on PGlite.
    const dataDir = tempDir('fleetgate-bench-env-');
    dirs.push(dataDir);
    const env = { FLEETGATE_DATA_DIR: dataDir, FLEETGATE_WORKERS: '1' };
    const server = await lib.startServe(env);
    try {
      expect(server.apiUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      expect(server.apiUrl).not.toMatch(/:1$/);
      expect(await lib.cli(['ca', 'export'], env)).toContain('-----BEGIN CERTIFICATE-----');
      expect(await lib.cli(['health'], env)).toBeDefined();
    } finally {
      expect(await server.stop()).toBe(0);
    }
  }, 300_000);
});
