/**
 * Broken data dirs and databases: a clear one-line message, a non-zero exit, and nothing
 * overwritten (fleetgate must never silently create a second CA over an existing one).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startServe, tempDir } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/pg.js';

/** Digest of every file under dir (names + contents), to prove nothing changed. */
function snapshot(dir: string): string {
  const h = createHash('sha256');
  const walk = (d: string) => {
    for (const name of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, name.name);
      h.update(p);
      if (name.isDirectory()) walk(p);
      else h.update(readFileSync(p));
    }
  };
  walk(dir);
  return h.digest('hex');
}

async function serveFails(env: Record<string, string>, code: string): Promise<string> {
  const r = await runCli(
    ['serve'],
    { FLEETGATE_API_PORT: '0', FLEETGATE_MQTT_PORT: '0', ...env },
    { timeoutMs: 60_000 },
  );
  expect(r.code, r.stdout + r.stderr).toBe(1);
  const lines = r.stderr.trim().split('\n');
  const last = lines[lines.length - 1] ?? '';
  expect(last).toContain(`[${code}]`);
  expect(r.stdout).not.toContain('Press Ctrl+C');
  return last;
}

describe('serve refuses broken data dirs', () => {
  let caSource: string;
  beforeAll(async () => {
    // One good data dir (with a CA) to copy broken variants from.
    caSource = tempDir();
    const s = await startServe({ FLEETGATE_DATA_DIR: caSource });
    expect(await s.stop()).toBe(0);
  });

  function copyCa(): string {
    const dir = tempDir();
    mkdirSync(path.join(dir, 'ca'), { mode: 0o700 });
    for (const f of readdirSync(path.join(caSource, 'ca'))) {
      writeFileSync(path.join(dir, 'ca', f), readFileSync(path.join(caSource, 'ca', f)), { mode: 0o600 });
    }
    return dir;
  }

  it('data dir is a file', async () => {
    const file = path.join(tempDir(), 'not-a-dir');
    writeFileSync(file, 'x');
    const line = await serveFails({ FLEETGATE_DATA_DIR: file }, 'DATA_DIR_INVALID');
    expect(line).toContain(file);
    expect(readFileSync(file, 'utf8')).toBe('x');
  });

  it('corrupt issuing key', async () => {
    const dir = copyCa();
    writeFileSync(
      path.join(dir, 'ca', 'issuing.key'),
      '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n',
    );
    const before = snapshot(path.join(dir, 'ca'));
    await serveFails({ FLEETGATE_DATA_DIR: dir }, 'CA_MATERIAL_INVALID');
    expect(snapshot(path.join(dir, 'ca'))).toBe(before);
  });

  it('issuing key belongs to another CA', async () => {
    const dir = copyCa();
    const other = tempDir();
    const s = await startServe({ FLEETGATE_DATA_DIR: other });
    await s.stop();
    writeFileSync(path.join(dir, 'ca', 'issuing.key'), readFileSync(path.join(other, 'ca', 'issuing.key')));
    const before = snapshot(path.join(dir, 'ca'));
    await serveFails({ FLEETGATE_DATA_DIR: dir }, 'CA_MATERIAL_INVALID');
    expect(snapshot(path.join(dir, 'ca'))).toBe(before);
  });

  it('unreadable key file (a directory where the key should be)', async () => {
    const dir = copyCa();
    rmSync(path.join(dir, 'ca', 'issuing.key'));
    mkdirSync(path.join(dir, 'ca', 'issuing.key'));
    const line = await serveFails({ FLEETGATE_DATA_DIR: dir }, 'DATA_DIR_INVALID');
    expect(line).toContain('issuing.key');
  });

  it('incomplete CA material is reported, not replaced', async () => {
    const dir = copyCa();
    rmSync(path.join(dir, 'ca', 'issuing.crt'));
    const before = snapshot(path.join(dir, 'ca'));
    const line = await serveFails({ FLEETGATE_DATA_DIR: dir }, 'CA_MATERIAL_INVALID');
    expect(line).toContain('issuing.crt');
    expect(snapshot(path.join(dir, 'ca'))).toBe(before);
  });

  it('root key moved offline is fine', async () => {
    const dir = copyCa();
    rmSync(path.join(dir, 'ca', 'root.key'));
    const s = await startServe({ FLEETGATE_DATA_DIR: dir });
    expect(s.banner).not.toContain('new CA created');
    expect(await s.stop()).toBe(0);
  });
});

describe('serve when a port is taken', () => {
  // Before: a stack trace, and with one broker process a server that never exited, ignoring
  // SIGTERM (the broker's timers outlived the failed listen).
  for (const [which, workers] of [
    ['FLEETGATE_API_PORT', '2'],
    ['FLEETGATE_MQTT_PORT', '1'],
    ['FLEETGATE_MQTT_PORT', '2'],
  ] as const) {
    it(`${which} in use (${workers} broker process${workers === '1' ? '' : 'es'}): one line naming it, exit 1`, async () => {
      const holder = createServer();
      await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
      const port = String((holder.address() as { port: number }).port);
      try {
        const last = await serveFails(
          { FLEETGATE_DATA_DIR: tempDir(), FLEETGATE_WORKERS: workers, [which]: port },
          'CONFIG_INVALID',
        );
        expect(last).toContain(which);
        expect(last).toContain('in use');
      } finally {
        holder.close();
      }
    });
  }
});

describe('serve against PostgreSQL problems', () => {
  let db: { url: string; drop(): Promise<void> };
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('DATABASE_URL pointing nowhere fails fast with STORE_UNAVAILABLE', async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = createServer();
      srv.listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const dir = tempDir();
    const line = await serveFails(
      { FLEETGATE_DATA_DIR: dir, DATABASE_URL: `postgres://postgres:hunter2@127.0.0.1:${port}/none` },
      'STORE_UNAVAILABLE',
    );
    expect(line).not.toContain('hunter2');
  });

  it('a database that knows a CA refuses a data dir without one', async () => {
    const dir = tempDir();
    const s = await startServe({ FLEETGATE_DATA_DIR: dir, DATABASE_URL: db.url });
    expect(await s.stop()).toBe(0);
    const fresh = tempDir();
    const line = await serveFails({ FLEETGATE_DATA_DIR: fresh, DATABASE_URL: db.url }, 'CA_MATERIAL_INVALID');
    expect(line).toContain('refusing to create a second CA');
    expect(readdirSync(path.join(fresh, 'ca'))).toEqual([]);
  });

  it('a database that knows another CA refuses this data dir', async () => {
    const other = tempDir();
    const s = await startServe({ FLEETGATE_DATA_DIR: other });
    await s.stop();
    const before = snapshot(path.join(other, 'ca'));
    await serveFails({ FLEETGATE_DATA_DIR: other, DATABASE_URL: db.url }, 'CA_MATERIAL_INVALID');
    expect(snapshot(path.join(other, 'ca'))).toBe(before);
  });
});
