// Shared pieces of the benchmark harness: processes, /proc CPU and memory, a fresh database.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const FLEETGATE = path.join(REPO, 'server/bin/fleetgate.js');
const TICKS = 100; // USER_HZ on Linux

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

/** Resident set size in KiB, from /proc/<pid>/status. */
export function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

export function tempDir(prefix = 'fleetgate-bench-') {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

export function log(line) {
  process.stderr.write(`${line}\n`);
}

/** A throw-away database on the PostgreSQL server in DATABASE_URL (or the local default). */
export async function freshDatabase() {
  const adminUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const name = `fleetgate_bench_${randomBytes(4).toString('hex')}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    },
  };
}

/** Starts `fleetgate serve`; resolves with its pid, API URL and a stop() once the banner shows. */
export function startServe(env) {
  return new Promise((resolve, reject) => {
    // FLEETGATE_BENCH_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", profiles the server.
    const nodeArgs = (process.env.FLEETGATE_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [...nodeArgs, FLEETGATE, 'serve'], {
      env: { ...process.env, FLEETGATE_API_PORT: '0', FLEETGATE_MQTT_PORT: '0', FLEETGATE_LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('Press Ctrl+C')) {
        resolve({
          pid: child.pid,
          apiUrl: /API \(HTTPS\)\s+(\S+)/.exec(out)?.[1],
          mqttUrl: /MQTT \(mTLS\)\s+(\S+)/.exec(out)?.[1],
          exited: () => child.exitCode !== null || child.signalCode !== null,
          stop: () =>
            new Promise((r) => {
              if (child.exitCode !== null) return r(child.exitCode);
              child.once('exit', (code) => r(code));
              child.kill('SIGTERM');
            }),
        });
      }
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.once('exit', (code) => {
      if (!out.includes('Press Ctrl+C')) reject(new Error(`serve exited ${code}: ${err}`));
    });
  });
}

/** Runs `fleetgate <args>` and resolves with stdout (rejects on a non-zero exit). */
export function cli(args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FLEETGATE, ...args], { env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`fleetgate ${args.join(' ')}: ${err}`))));
  });
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export const round = (n, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
