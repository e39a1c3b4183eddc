/**
 * The data dir is private (issue 21, finding 1): `fleetgate serve` (the real CLI, embedded PGlite)
 * runs under umask 077, tightens a data dir, db/ and ca/ left open to group or others (and the
 * files inside, e.g. PGlite files written 0666 by an older version), never follows a symbolic
 * link while doing so, and refuses a data dir owned by another user with one line.
 */
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runCli, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';

const made: string[] = [];
function scratch(prefix: string): string {
  const dir = tempDir(prefix);
  made.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

const mode = (p: string) => lstatSync(p).mode & 0o777;

/** Every entry under `root` (itself included) that is not 0700 (directories) or 0600 (files). */
function looseEntries(root: string): string[] {
  const loose: string[] = [];
  const visit = (p: string) => {
    const st = lstatSync(p);
    if (st.isSymbolicLink()) return;
    const want = st.isDirectory() ? 0o700 : 0o600;
    if ((st.mode & 0o777) !== want) loose.push(`${path.relative(root, p) || '.'} 0${(st.mode & 0o777).toString(8)}`);
    if (st.isDirectory()) for (const name of readdirSync(p)) visit(path.join(p, name));
  };
  visit(root);
  return loose;
}

/** Opens every directory and regular file under `root` to group and others, as an old version left them. */
function loosen(root: string): number {
  let count = 0;
  const visit = (p: string) => {
    const st = lstatSync(p);
    if (st.isSymbolicLink()) return;
    chmodSync(p, st.isDirectory() ? 0o755 : 0o666);
    count++;
    if (st.isDirectory()) for (const name of readdirSync(p)) visit(path.join(p, name));
  };
  visit(root);
  return count;
}

function umaskOf(pid: number): string | undefined {
  return /^Umask:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
}

describe('data dir permissions', () => {
  let server: ServeHandle | undefined;
  afterAll(async () => {
    await server?.stop('SIGKILL');
  });

  // Two starts of a real server and a few CLI runs: generous on a loaded 2-core machine.
  it('a loose data dir (0755, PGlite files 0666, loose files in db/ and ca/) is tightened at start and stays private', {
    timeout: 240_000,
  }, async () => {
    const dataDir = scratch('fg-perm-');
    chmodSync(dataDir, 0o755);
    const env = { FLEETGATE_DATA_DIR: dataDir };
    // A first start creates the database and the CA; then everything is opened up as an older
    // fleetgate (no umask, PGlite writing 0666) left it on a 0755 /data.
    server = await startServe(env);
    expect(await server.stop('SIGTERM')).toBe(0);
    server = undefined;
    writeFileSync(path.join(dataDir, 'db', 'stray.conf'), 'x', { mode: 0o644 });
    mkdirSync(path.join(dataDir, 'ca', 'old'), { mode: 0o755 });
    writeFileSync(path.join(dataDir, 'ca', 'old', 'note.txt'), 'x', { mode: 0o644 });
    // A link inside ca/ to a file outside: not followed, its target keeps its mode.
    const outside = path.join(scratch('fg-perm-outside-'), 'public.pem');
    writeFileSync(outside, 'public', { mode: 0o644 });
    chmodSync(outside, 0o644);
    symlinkSync(outside, path.join(dataDir, 'ca', 'link.pem'));
    const opened = loosen(dataDir);
    expect(opened).toBeGreaterThan(100); // PGlite's catalog and WAL
    expect(looseEntries(dataDir).length).toBe(opened);

    server = await startServe(env);
    // One warning line per directory tightened, naming the path and both modes.
    const warnings = server
      .stderr()
      .split('\n')
      .filter((l) => l.includes('"oldMode"'))
      .map((l) => JSON.parse(l) as { path: string; oldMode: string; newMode: string });
    expect(warnings).toEqual(
      expect.arrayContaining(
        [dataDir, path.join(dataDir, 'ca'), path.join(dataDir, 'db')].map((p) =>
          expect.objectContaining({ path: p, oldMode: '0755', newMode: '0700' }),
        ),
      ),
    );
    // The serving process (relaunched under fleetgate's OpenSSL settings) runs under umask 077.
    const runtime = JSON.parse(readFileSync(path.join(dataDir, 'serve.json'), 'utf8')) as { pid: number };
    expect(umaskOf(runtime.pid)).toBe('0077');

    // Make PGlite and fleetgate write after the start (tokens, audit events, WAL).
    const tokens = await runCli(['token', 'create', '--count', '5', '--prefix', 'perm-dev-'], env);
    expect(tokens.code, tokens.stderr).toBe(0);
    const op = await runCli(['operator', 'create', 'perm-op'], env);
    expect(op.code, op.stderr).toBe(0);

    expect(looseEntries(dataDir)).toEqual([]);
    expect(mode(outside)).toBe(0o644);
    expect(lstatSync(path.join(dataDir, 'ca', 'link.pem')).isSymbolicLink()).toBe(true);

    expect(await server.stop('SIGTERM')).toBe(0);
    server = undefined;
    // Also after the shutdown (checkpoint, lock file removed).
    expect(looseEntries(dataDir)).toEqual([]);
  });

  it('a new data dir and everything in it is private from the first start', { timeout: 180_000 }, async () => {
    const dataDir = path.join(scratch('fg-perm-new-'), 'nested', 'data');
    const env = { FLEETGATE_DATA_DIR: dataDir };
    server = await startServe(env);
    const svcOut = path.join(dataDir, '..', 'svc');
    const r = await runCli(['service', 'create', 'perm-svc', '--out', svcOut], env);
    expect(r.code, r.stderr).toBe(0);
    expect(looseEntries(dataDir)).toEqual([]);
    expect(mode(path.dirname(dataDir))).toBe(0o700);
    expect(mode(path.join(svcOut, 'perm-svc.key'))).toBe(0o600);
    expect(mode(svcOut)).toBe(0o700);
    expect(await server.stop('SIGTERM')).toBe(0);
    server = undefined;
  });

  const isRoot = process.getuid?.() === 0;
  it('a data dir owned by another user is refused with one line naming it and its mode', {
    timeout: 180_000,
  }, async () => {
    if (!isRoot) {
      console.warn('\n!!! not running as root: cannot chown a data dir to another user; ownership case SKIPPED !!!\n');
      return;
    }
    const parent = scratch('fg-perm-other-');
    chmodSync(parent, 0o755);
    // The whole data dir belongs to someone else (a root-run server must not write keys there).
    const foreign = path.join(parent, 'foreign');
    mkdirSync(foreign, { mode: 0o755 });
    chmodSync(foreign, 0o755);
    chownSync(foreign, 65534, 65534);
    // Only ca/ belongs to someone else, with a tight mode: still refused (its owner can replace the keys).
    const partly = path.join(parent, 'partly');
    mkdirSync(path.join(partly, 'ca'), { recursive: true, mode: 0o700 });
    chownSync(path.join(partly, 'ca'), 65534, 65534);
    for (const [dataDir, culprit, shown] of [
      [foreign, foreign, '0755'],
      [partly, path.join(partly, 'ca'), '0700'],
    ] as const) {
      const r = await runCli(['serve'], {
        FLEETGATE_DATA_DIR: dataDir,
        FLEETGATE_API_PORT: '0',
        FLEETGATE_MQTT_PORT: '0',
      });
      expect(r.code, r.stdout + r.stderr).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toContain('[DATA_DIR_INVALID]');
      expect(lines[0]).toContain(culprit);
      expect(lines[0]).toContain(shown);
      expect(lines[0]).toContain('uid 65534');
      // Nothing was created or changed there.
      expect(readdirSync(culprit)).toEqual([]);
      expect(mode(culprit).toString(8)).toBe(shown.slice(1));
    }
    expect(statSync(path.join(partly, 'ca')).uid).toBe(65534);
  });

  it('the Dockerfile makes /data private to the node user', () => {
    const dockerfile = readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/chmod -R 0700 \/data\b/);
  });
});
