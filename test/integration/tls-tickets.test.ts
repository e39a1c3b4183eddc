/**
 * `fleetgate serve` relaunches itself under server/openssl/fleetgate.cnf so that its TLS servers
 * send one TLS 1.3 session ticket per handshake instead of OpenSSL's two (cli/tls-relaunch.ts),
 * and the relaunched server never outlives its launcher.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { connect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { cliEnv, FLEETGATE_BIN, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';

/** TLS 1.3 handshake with the API; resolves with the number of session tickets received. */
function ticketsFrom(apiUrl: string): Promise<number> {
  const { hostname, port } = new URL(apiUrl);
  return new Promise((resolve, reject) => {
    let tickets = 0;
    const s = connect({ host: hostname, port: Number(port), rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    s.on('session', () => {
      tickets++;
    });
    s.on('error', reject);
    // Tickets follow the handshake; a request and its answer flush them out.
    s.on('secureConnect', () => s.write(`GET /healthz HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n\r\n`));
    s.on('data', () => undefined);
    s.on('close', () => resolve(tickets));
  });
}

const serverPid = (dataDir: string): number =>
  (JSON.parse(readFileSync(path.join(dataDir, 'serve.json'), 'utf8')) as { pid: number }).pid;

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('TLS session tickets per handshake', () => {
  let server: ServeHandle | undefined;
  afterEach(async () => {
    await server?.stop('SIGTERM');
    server = undefined;
  });

  it('sends one ticket by default, from a server process relaunched with --openssl-config', async () => {
    const dataDir = tempDir();
    server = await startServe({ FLEETGATE_DATA_DIR: dataDir, FLEETGATE_WORKERS: '1' });
    expect(await ticketsFrom(server.apiUrl)).toBe(1);
    const pid = serverPid(dataDir);
    expect(pid).not.toBe(server.child.pid);
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('--openssl-config=');
  });

  it("keeps OpenSSL's two tickets, in one process, with FLEETGATE_TLS_TICKETS=2", async () => {
    const dataDir = tempDir();
    server = await startServe({ FLEETGATE_DATA_DIR: dataDir, FLEETGATE_WORKERS: '1', FLEETGATE_TLS_TICKETS: '2' });
    expect(await ticketsFrom(server.apiUrl)).toBe(2);
    expect(serverPid(dataDir)).toBe(server.child.pid);
  });

  it('passes SIGTERM and SIGHUP on and returns the exit code; a killed launcher takes the server down', async () => {
    const dataDir = tempDir();
    const first = await startServe({ FLEETGATE_DATA_DIR: dataDir, FLEETGATE_WORKERS: '1' });
    const firstPid = serverPid(dataDir);
    expect(await first.stop('SIGTERM')).toBe(0);
    expect(first.stdout()).toContain('stopped');
    await waitFor('the first server process to exit', () => !alive(firstPid), 10_000);

    // SIGHUP (a closed terminal) is passed on too and stops the server as gracefully.
    const hup = await startServe({ FLEETGATE_DATA_DIR: dataDir, FLEETGATE_WORKERS: '1' });
    const hupPid = serverPid(dataDir);
    expect(await hup.stop('SIGHUP')).toBe(0);
    expect(hup.stdout()).toContain('SIGHUP: shutting down');
    expect(hup.stdout()).toContain('stopped');
    await waitFor('the SIGHUP-stopped server process to exit', () => !alive(hupPid), 10_000);

    const second = await startServe({ FLEETGATE_DATA_DIR: dataDir, FLEETGATE_WORKERS: '1' });
    const pid = serverPid(dataDir);
    await second.stop('SIGKILL');
    // The server sees its IPC channel close and shuts down gracefully: the lock is released
    // and the next start on the same data dir works.
    await waitFor('the server process to exit after its launcher', () => !alive(pid), 30_000);
    server = await startServe({ FLEETGATE_DATA_DIR: dataDir, FLEETGATE_WORKERS: '1' });
    expect(await ticketsFrom(server.apiUrl)).toBe(1);
  });

  it('stops gracefully on Ctrl+C: SIGINT to the whole process group reaches the server once', async () => {
    const dataDir = tempDir();
    // Its own process group, as a shell gives a foreground job; the signal goes to the group.
    const child = spawn(process.execPath, [FLEETGATE_BIN, 'serve'], {
      // cliEnv, as startServe: CI's DATABASE_URL (a database other tests gave another CA) stays out.
      env: cliEnv({ FLEETGATE_DATA_DIR: dataDir, FLEETGATE_API_PORT: '0', FLEETGATE_MQTT_PORT: '0' }),
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.resume();
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await waitFor('the serve banner', () => stdout.includes('Press Ctrl+C to stop.'), 90_000);
    process.kill(-(child.pid as number), 'SIGINT');
    expect(await exited).toBe(0);
    expect(stdout).toContain('SIGINT: shutting down');
    expect(stdout).not.toContain('again');
    expect(stdout).toContain('stopped');
  });
});
