/**
 * `fleetgate serve` and `fleetgate ca export` as a user runs them: real process, real TLS, real
 * databases (embedded PGlite and PostgreSQL), real openssl/curl checks.
 */
import { execFileSync } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';
import { requireTool } from '../helpers/system-tools.js';

const hasOpenssl = requireTool('openssl');
const hasCurl = requireTool('curl');

function fingerprints(banner: string): { root: string; issuing: string } {
  const root = /root CA\s+SHA256 (\S+)/.exec(banner)?.[1];
  const issuing = /issuing CA\s+SHA256 (\S+)/.exec(banner)?.[1];
  if (!root || !issuing) throw new Error(`no fingerprints in banner:\n${banner}`);
  return { root, issuing };
}

async function exportBundle(dataDir: string): Promise<string> {
  const r = await runCli(['ca', 'export'], { FLEETGATE_DATA_DIR: dataDir });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

describe('fleetgate CLI basics', () => {
  it('prints help for the tool and for every command', async () => {
    const top = await runCli(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain('serve');
    expect(top.stdout).toContain('ca export');
    for (const cmd of [['serve'], ['ca', 'export']]) {
      const r = await runCli([...cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: fleetgate ${cmd.join(' ')}`);
    }
  });

  it('rejects unknown commands and options with exit code 2', async () => {
    const unknown = await runCli(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command');
    const badOption = await runCli(['ca', 'export', '--nope']);
    expect(badOption.code).toBe(2);
    expect(badOption.stderr).toContain('--nope');
    const group = await runCli(['ca']);
    expect(group.code).toBe(2);
    expect(group.stderr).toContain('export');
    const none = await runCli([]);
    expect(none.code).toBe(2);
    // Usage errors are one line with exit 2, also where the value is out of range or Node's
    // parser would explain over several lines; checked before any server is needed.
    const dir = { FLEETGATE_DATA_DIR: tempDir() };
    for (const args of [
      ['token', 'create', '--device', 'x', '--ttl', '-1s'],
      ['devices', 'list', '--limit', '0'],
      ['devices', 'list', '--limit', '5000'],
      ['certs', 'expiring', '--days', '9999'],
      ['ca', 'export', '--root-only', '--issuing-only'],
    ]) {
      const r = await runCli(args, dir);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
  });

  it('stops on a bad config value with one line naming the variable', async () => {
    const r = await runCli(['serve'], { FLEETGATE_API_PORT: 'eighty', FLEETGATE_DATA_DIR: tempDir() });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('FLEETGATE_API_PORT');
    expect(r.stderr).toContain('[CONFIG_INVALID]');
  });

  it('ca export without a CA explains what to do', async () => {
    const r = await runCli(['ca', 'export'], { FLEETGATE_DATA_DIR: tempDir() });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no CA');
  });
});

const backends: { name: string; setup: () => Promise<{ env: Record<string, string>; teardown(): Promise<void> }> }[] = [
  { name: 'embedded PGlite', setup: async () => ({ env: {}, teardown: async () => {} }) },
  {
    name: 'PostgreSQL',
    setup: async () => {
      const db = await createTestDatabase();
      return { env: { DATABASE_URL: db.url }, teardown: db.drop };
    },
  },
];

describe.each(backends)('fleetgate serve on $name', ({ setup }) => {
  let env: Record<string, string>;
  let teardown: () => Promise<void>;
  let dataDir: string;
  let first: ServeHandle | undefined;
  let firstPrints: { root: string; issuing: string } | undefined;

  beforeAll(async () => {
    ({ env, teardown } = await setup());
    dataDir = tempDir();
    env = { ...env, FLEETGATE_DATA_DIR: dataDir };
  });
  afterAll(async () => {
    await first?.stop('SIGKILL');
    await teardown();
  });

  it('starts, creates the CA with safe permissions, serves TLS from that CA and stops gracefully', async () => {
    first = await startServe(env);
    expect(first.banner).toContain('new CA created');
    expect(first.banner).toContain(`data dir      ${dataDir}`);
    expect(first.banner).toContain(env.DATABASE_URL ? 'PostgreSQL' : 'embedded PGlite');
    firstPrints = fingerprints(first.banner);

    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    for (const key of ['root.key', 'issuing.key']) {
      expect(statSync(path.join(dataDir, 'ca', key)).mode & 0o777).toBe(0o600);
    }
    expect(first.stdout() + first.stderr()).not.toContain('PRIVATE KEY');

    const bundle = await exportBundle(dataDir);
    expect(bundle.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    const bundleFile = path.join(tempDir(), 'ca.pem');
    writeFileSync(bundleFile, bundle);

    if (hasCurl) {
      // curl trusts only our bundle: the API certificate must chain to our root.
      const health = execFileSync('curl', ['-sS', '--fail', '--cacert', bundleFile, `${first.apiUrl}/healthz`], {
        encoding: 'utf8',
      });
      expect(JSON.parse(health)).toEqual({ status: 'ok' });
      const ready = execFileSync('curl', ['-sS', '--fail', '--cacert', bundleFile, `${first.apiUrl}/readyz`], {
        encoding: 'utf8',
      });
      expect(JSON.parse(ready)).toEqual({ status: 'ready' });
    }
    if (hasOpenssl) {
      const port = new URL(first.apiUrl).port;
      const out = execFileSync(
        'openssl',
        ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', bundleFile, '-verify_return_error', '-brief'],
        { input: '', encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] },
      );
      expect(out).toBeDefined();
    }

    const code = await first.stop('SIGTERM');
    expect(code).toBe(0);
    expect(first.stdout()).toContain('stopped');
    first = undefined;
  });

  it('keeps the same CA across a restart', async () => {
    expect(firstPrints, 'first start must have run').toBeDefined();
    const bundleBefore = await exportBundle(dataDir);
    const again = await startServe(env);
    try {
      expect(again.banner).not.toContain('new CA created');
      expect(fingerprints(again.banner)).toEqual(firstPrints);
      expect(await exportBundle(dataDir)).toBe(bundleBefore);
      const health = await runCli(['health', '--json'], env);
      expect(health.code, health.stdout + health.stderr).toBe(0);
      expect(JSON.parse(health.stdout)).toMatchObject({ ok: true, status: 'ready', url: again.apiUrl });
    } finally {
      expect(await again.stop('SIGINT')).toBe(0);
    }
    // Stopped: the health check fails (serve.json is gone, the default port answers nothing).
    const down = await runCli(['health'], { ...env, FLEETGATE_API_PORT: '1' });
    expect(down.code).toBe(1);
    expect(down.stdout).toContain('not ready');
  });
});

describe('fleetgate serve on a host other than loopback', () => {
  it('names FLEETGATE_HOST in its certificate, so the CLI and curl verify the URL it advertises', async () => {
    // 127.0.0.2 is loopback on Linux but not 127.0.0.1: before, the certificate named only
    // localhost, 127.0.0.1 and FLEETGATE_SERVER_NAMES, and every CLI call failed here with
    // ERR_TLS_CERT_ALTNAME_INVALID.
    const dataDir = tempDir();
    const hostEnv = { FLEETGATE_DATA_DIR: dataDir, FLEETGATE_HOST: '127.0.0.2', FLEETGATE_WORKERS: '1' };
    const serve = await startServe(hostEnv);
    try {
      expect(serve.apiUrl).toMatch(/^https:\/\/127\.0\.0\.2:\d+$/);
      const health = await runCli(['health', '--json'], hostEnv);
      expect(health.code, health.stdout + health.stderr).toBe(0);
      expect(JSON.parse(health.stdout)).toMatchObject({ ok: true, url: serve.apiUrl });
      const tokens = await runCli(['token', 'create', '--device', 'dev-host-1', '--json'], hostEnv);
      expect(tokens.code, tokens.stderr).toBe(0);

      const bundleFile = path.join(tempDir(), 'ca.pem');
      writeFileSync(bundleFile, await exportBundle(dataDir));
      if (hasCurl) {
        const out = execFileSync('curl', ['-sS', '--fail', '--cacert', bundleFile, `${serve.apiUrl}/healthz`], {
          encoding: 'utf8',
        });
        expect(JSON.parse(out)).toEqual({ status: 'ok' });
      }

      // FLEETGATE_URL names another server: the local data dir's CA is not trusted for it (only
      // the system store, or FLEETGATE_CA_FILE), so our private CA fails here and the pin works.
      const remote = { FLEETGATE_DATA_DIR: dataDir, FLEETGATE_URL: serve.apiUrl };
      const unpinned = await runCli(['health'], remote);
      expect(unpinned.code, unpinned.stdout).toBe(1);
      const pinned = await runCli(['health', '--json'], { ...remote, FLEETGATE_CA_FILE: bundleFile });
      expect(pinned.code, pinned.stdout + pinned.stderr).toBe(0);
    } finally {
      expect(await serve.stop('SIGTERM')).toBe(0);
    }
  });
});
