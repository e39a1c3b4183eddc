/**
 * A PostgreSQL server of the test's own (initdb + pg_ctl in a temp dir, on a free port, Unix
 * socket in that dir), for tests that stop and start the database under a running server. Never
 * the machine's shared cluster. PostgreSQL refuses to run as root, so when the tests run as root
 * the commands run as the `postgres` user (spawn's uid/gid) and the dir is handed to it.
 *
 * Locally missing initdb/pg_ctl skips such tests with a loud warning; in CI
 * (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1) it fails them (requireTool).
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './cli.js';
import { requireTool } from './system-tools.js';

const run = promisify(execFile);

export interface PrivateCluster {
  /** postgres://postgres@127.0.0.1:<port>/postgres (trust auth). */
  url: string;
  port: number;
  /** pg_ctl stop -m fast: every connection is closed, the port refuses. */
  stop(): Promise<void>;
  /** pg_ctl start on the same port and data. */
  start(): Promise<void>;
  /** Stops it if running and removes its temp dir. */
  destroy(): Promise<void>;
}

export function privateClusterTools(): boolean {
  return requireTool('initdb') && requireTool('pg_ctl');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** uid/gid to run PostgreSQL's tools as: ours, or the postgres user's when we are root. */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

export async function startPrivateCluster(): Promise<PrivateCluster> {
  const dir = tempDir('fleetgate-pg-');
  const data = path.join(dir, 'data');
  const user = runAs();
  const opts = { ...(user ?? {}), cwd: dir, env: { ...process.env, LC_ALL: 'C' } };
  let running = false;
  const port = await freePort();
  const pgCtl = async (...args: string[]) => {
    await run('pg_ctl', ['-D', data, '-w', '-t', '60', ...args], opts);
  };
  const start = async () => {
    await pgCtl(
      '-l',
      path.join(dir, 'server.log'),
      '-o',
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`,
      'start',
    );
    running = true;
  };
  try {
    if (user) chownSync(dir, user.uid, user.gid);
    await run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8'], opts);
    await start();
  } catch (e) {
    if (running) await pgCtl('-m', 'immediate', 'stop').catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    async stop() {
      await pgCtl('-m', 'fast', 'stop');
      running = false;
    },
    start,
    async destroy() {
      try {
        if (running) await pgCtl('-m', 'immediate', 'stop');
      } finally {
        running = false;
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
