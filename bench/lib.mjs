// Shared pieces of the benchmark harness: processes, /proc CPU and memory, a fresh database.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
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

/**
 * What the caller's environment may say that would change what a child of the benchmark does:
 * fleetgate's settings (a data dir, ports, a database or Redis of the caller's, workers, limits),
 * libpq's PG* defaults, an OpenSSL configuration (it replaces fleetgate's, see README "TLS session
 * tickets") and NODE_OPTIONS. None of it reaches a child: each gets exactly what the benchmark sets.
 * The benchmark itself still reads DATABASE_URL (the PostgreSQL server it creates its databases
 * on) and its own FLEETGATE_BENCH_* knobs.
 */
const CALLER_ONLY = /^(FLEETGATE_|PG[A-Z]|DATABASE_URL$|REDIS_URL$|OPENSSL_CONF$|OPENSSL_MODULES$|NODE_OPTIONS$)/;

/** The environment of a child process: the caller's minus CALLER_ONLY, plus `set`. */
export function childEnv(set = {}, from = process.env) {
  const env = {};
  for (const [k, v] of Object.entries(from)) if (!CALLER_ONLY.test(k) && v !== undefined) env[k] = v;
  return { ...env, ...set };
}

/**
 * Broker workers of the servers the benchmark starts: FLEETGATE_BENCH_WORKERS if set (passed on
 * as FLEETGATE_WORKERS), else fleetgate's default, one per core.
 */
export function benchWorkers() {
  const n = process.env.FLEETGATE_BENCH_WORKERS;
  return n ? Number(n) : availableParallelism();
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

/** SIGTERM to a child process; resolves with its exit code once it is gone (at once if it is). */
function stopChild(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

/**
 * Starts `fleetgate serve`; resolves with its pid, API URL and a stop() once the banner shows.
 * `bin` runs another checkout's build (bench/connect-ruler.mjs A/Bs two of them); `nodeArgs`
 * replaces FLEETGATE_BENCH_NODE_ARGS.
 */
export function startServe(env, { bin = FLEETGATE, nodeArgs: args } = {}) {
  return new Promise((resolve, reject) => {
    // FLEETGATE_BENCH_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", profiles the server.
    const nodeArgs = args ?? (process.env.FLEETGATE_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [...nodeArgs, bin, 'serve'], {
      env: childEnv({
        FLEETGATE_API_PORT: '0',
        FLEETGATE_MQTT_PORT: '0',
        FLEETGATE_PKI_HTTP_PORT: '0',
        FLEETGATE_LOG_LEVEL: 'warn',
        FLEETGATE_WORKERS: String(benchWorkers()),
        ...env,
      }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('Press Ctrl+C')) {
        // `serve` relaunches itself under fleetgate's OpenSSL settings (README, "TLS session
        // tickets"): the serving process, whose tree holds the broker workers, is the one its
        // data dir names; the launcher only waits for it.
        let pid = child.pid;
        try {
          pid = JSON.parse(readFileSync(path.join(env.FLEETGATE_DATA_DIR, 'serve.json'), 'utf8')).pid ?? pid;
        } catch {}
        resolve({
          pid,
          launcherPid: child.pid,
          apiUrl: /API \(HTTPS\)\s+(\S+)/.exec(out)?.[1],
          mqttUrl: /MQTT \(mTLS\)\s+(\S+)/.exec(out)?.[1],
          exited: () => child.exitCode !== null || child.signalCode !== null,
          stop: () => stopChild(child),
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
    const child = spawn(process.execPath, [FLEETGATE, ...args], { env: childEnv(env) });
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

/** The pid and every live descendant (cluster workers, child processes), from /proc children lists. */
export function processTree(pid) {
  const pids = [];
  const walk = (p) => {
    pids.push(p);
    let tasks = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const t of tasks) {
      let children = '';
      try {
        children = readFileSync(`/proc/${p}/task/${t}/children`, 'utf8');
      } catch {}
      for (const c of children.split(' ').filter(Boolean)) walk(Number(c));
    }
  };
  walk(pid);
  return pids;
}

/** Sum of a /proc reading over a process tree; processes that vanish mid-read count as 0. */
function sumTree(pid, read) {
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      const v = read(p);
      if (Number.isFinite(v)) total += v;
    } catch {}
  }
  return total;
}

/** CPU seconds (user + system) of a process and its live descendants. */
export const treeCpuSeconds = (pid) => sumTree(pid, cpuSeconds);

/** RSS in KiB of a process and its live descendants. */
export const treeRssKiB = (pid) => sumTree(pid, rssKiB);

/** Resolves once something accepts TCP connections on host:port (or rejects after timeoutMs). */
export async function waitForPort(port, host = '127.0.0.1', timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = netConnect({ port, host }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A TCP port that was free a moment ago (the kernel picks it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts mosquitto with a generated mTLS config (TLS 1.3 by default, client certificates required,
 * identity = certificate CN, Nagle off, no persistence, no logging). `files` holds PEM paths:
 * { cafile, certfile, keyfile }. Resolves with { pid, port, exited(), stop() } once it listens.
 */
export async function startMosquitto({
  dir,
  cafile,
  certfile,
  keyfile,
  tlsVersion = 'tlsv1.3',
  bin = '/usr/sbin/mosquitto',
}) {
  const port = await freePort();
  const conf = path.join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      'per_listener_settings false',
      'persistence false',
      'log_dest none',
      'user root',
      'allow_anonymous false',
      'max_keepalive 65535',
      'max_connections -1',
      `listener ${port} 127.0.0.1`,
      `cafile ${cafile}`,
      `certfile ${certfile}`,
      `keyfile ${keyfile}`,
      'require_certificate true',
      'use_identity_as_username true',
      `tls_version ${tlsVersion}`,
      'set_tcp_nodelay true',
      '',
    ].join('\n'),
  );
  const child = spawn(bin, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv() });
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  const died = new Promise((_, reject) =>
    child.once('exit', (code) => reject(new Error(`mosquitto exited ${code}: ${err}`))),
  );
  died.catch(() => {});
  await Promise.race([waitForPort(port), died]);
  return {
    pid: child.pid,
    port,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    stop: () => stopChild(child),
  };
}

/**
 * Starts bench/floor-server.mjs (`mqtt` or `https`) with fleetgate's OpenSSL settings; resolves
 * with { pid, port, stop() }.
 */
export async function startFloorServer(mode, { keyfile, certfile, cafile }, workers = 1) {
  const child = spawn(
    process.execPath,
    [
      `--openssl-config=${path.join(REPO, 'server/openssl/fleetgate.cnf')}`,
      path.join(REPO, 'bench/floor-server.mjs'),
      mode,
      keyfile,
      certfile,
      cafile,
      String(workers),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], env: childEnv() },
  );
  const [line] = await new Promise((resolve, reject) => {
    child.stdout.once('data', (d) => resolve(String(d).split('\n')));
    child.once('exit', (code) => reject(new Error(`floor server (${mode}) exited ${code}`)));
  });
  return {
    pid: child.pid,
    port: Number(line),
    stop: () => stopChild(child),
  };
}

/** The CA loaded in this process from the data dir (compiled server in server/dist). */
export async function loadCa(dataDir) {
  const caMod = await import(pathToFileURL(path.join(REPO, 'server/dist/ca/index.js')).href);
  const read = (f) => readFileSync(path.join(dataDir, 'ca', f), 'utf8');
  const loaded = await caMod.loadCertificateAuthority({
    root: { certPem: read('root.crt') },
    issuing: { certPem: read('issuing.crt'), keyPem: read('issuing.key') },
  });
  if (!loaded.ok) throw new Error(`cannot load the CA from ${dataDir}: ${loaded.error.message}`);
  return { caMod, ca: loaded.value };
}

/** A server certificate for another TLS server under test (mosquitto, a floor server), issued by
 * our CA the same way the API's own is; resolves with { certfile, keyfile } in `dir`. */
export async function serverCertificate(dataDir, dir, name) {
  const { caMod, ca } = await loadCa(dataDir);
  const c = await caMod.issueServerCertificate(ca, { now: new Date(), dnsNames: [], ipAddresses: [], validityDays: 2 });
  const certfile = path.join(dir, `${name}.crt`);
  const keyfile = path.join(dir, `${name}.key`);
  writeFileSync(certfile, c.chainPem);
  writeFileSync(keyfile, c.keyPem, { mode: 0o600 });
  return { certfile, keyfile };
}
