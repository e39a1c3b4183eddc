// Reconnect storm: N devices (10,000; --quick 1,000) connected to `fleetgate serve`, the server
// restarted, every device reconnecting at once with its saved TLS ticket and a device-like retry
// (exponential backoff with jitter while the broker is down or sheds load). Reports the time from
// the restart to the last device back (CONNACK 0) and the share of those reconnects that resumed
// the TLS session. Devices are enrolled through EST once and cached with the data dir (embedded
// PGlite, CA files) in $TMPDIR/fleetgate-bench-storm-<N> (`--fresh` enrolls again).
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { enrollDevices, OUR_BROKER_ENV } from './broker.mjs';
import { benchWorkers, cli, log as logLine, percentile, round, startServe, treeCpuSeconds } from './lib.mjs';
import { identityContext, mqttConnect, pool } from './mqtt-load.mjs';

/**
 * Source addresses for the simulated devices: 10,000 devices reconnecting at once from one
 * address exhaust its ~28k ephemeral ports (old connections still in TIME_WAIT), and connect()
 * then spends its time in the kernel looking for a free port. Spread over 127.0.0.2-127.0.0.17,
 * as devices come from many addresses.
 */
const SOURCES = Array.from({ length: 16 }, (_, i) => `127.0.0.${i + 2}`);

const startedAt = performance.now();
const log = (line) => logLine(`[${((performance.now() - startedAt) / 1000).toFixed(1).padStart(5)} s] storm: ${line}`);

/**
 * At most this many connection attempts in flight from the load generator: one process plays every
 * device, and 10,000 TLS handshakes started in the same instant only measure its own event loop
 * (measured: no handshake completing at all). Devices beyond it wait their turn, as behind a real
 * network's SYN backlog.
 */
const IN_FLIGHT = Number(process.env.FLEETGATE_BENCH_STORM_IN_FLIGHT ?? 512);
let inFlight = 0;
const waiting = [];
async function slot(fn) {
  if (inFlight >= IN_FLIGHT) await new Promise((r) => waiting.push(r));
  inFlight++;
  try {
    return await fn();
  } finally {
    inFlight--;
    waiting.shift()?.();
  }
}

/** A device's reconnect loop: 250 ms x 2^attempt, capped at 8 s, jittered to [50%, 100%]. */
async function reconnect(d, port, stats) {
  for (let attempt = 0; ; attempt++) {
    try {
      const c = await slot(() =>
        mqttConnect({
          port,
          secureContext: d.ctx,
          clientId: d.id,
          session: d.session,
          localAddress: d.source,
          timeoutMs: 10_000,
        }),
      );
      c.socket.on('close', () => {
        d.socket = null;
      });
      d.socket = c.socket;
      d.reused = c.reused;
      d.latest = c.session;
      d.backAt = performance.now();
      return;
    } catch (e) {
      stats.failedAttempts++;
      const key = String(e?.code ?? e?.message ?? e).replace(/storm-\d+/g, '<id>');
      stats.errors[key] = (stats.errors[key] ?? 0) + 1;
      const base = Math.min(8_000, 250 * 2 ** Math.min(attempt, 5));
      await sleep(base * (0.5 + Math.random() / 2));
    }
  }
}

/**
 * The enrolled fleet, cached across runs: data dir (CA files) + devices.json in
 * $TMPDIR/fleetgate-bench-storm-<N>, and a PostgreSQL database fleetgate_bench_storm_<N> on the
 * server in DATABASE_URL (PostgreSQL, not the embedded PGlite: the broker's presence writes for
 * 10,000 devices at once would run inside the primary's event loop on PGlite).
 */
async function cachedFleet(n, fresh) {
  const dir = path.join(tmpdir(), `fleetgate-bench-storm-${n}`);
  const file = path.join(dir, 'devices.json');
  const adminUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const dbName = `fleetgate_bench_storm_${n}`;
  const url = new URL(adminUrl);
  url.pathname = `/${dbName}`;
  const env = { FLEETGATE_DATA_DIR: path.join(dir, 'data'), DATABASE_URL: url.toString(), ...OUR_BROKER_ENV };
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    const [{ exists }] = await admin`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = ${dbName}) AS exists`;
    if (!fresh && exists && existsSync(file)) {
      log(`${n} devices from the cache in ${dir} and database ${dbName}`);
      return { dir, env, ...JSON.parse(readFileSync(file, 'utf8')) };
    }
    rmSync(dir, { recursive: true, force: true });
    await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.unsafe(`CREATE DATABASE ${dbName}`);
  } finally {
    await admin.end();
  }
  mkdirSync(dir, { recursive: true });
  const server = await startServe({ ...env, FLEETGATE_WORKERS: '1' });
  try {
    const caPem = await cli(['ca', 'export'], env);
    const tokens = JSON.parse(
      await cli(['token', 'create', '--count', String(n), '--prefix', 'storm-', '--json'], env),
    );
    log(`enrolling ${n} devices through EST (once; cached)`);
    const devices = await enrollDevices(server.apiUrl, caPem, tokens);
    writeFileSync(file, JSON.stringify({ caPem, devices }), { mode: 0o600 });
    return { dir, env, caPem, devices };
  } finally {
    await server.stop();
  }
}

export async function benchStorm({ quick = false, devices: n = quick ? 1_000 : 10_000, workers, fresh = false } = {}) {
  const fleet = await cachedFleet(n, fresh);
  const env = { ...fleet.env, ...(workers ? { FLEETGATE_WORKERS: String(workers) } : {}) };
  const devices = fleet.devices.map((d, i) => ({
    ...d,
    ctx: identityContext(d, fleet.caPem),
    source: SOURCES[i % SOURCES.length],
  }));
  let server = await startServe(env);
  const port = Number(new URL(server.mqttUrl).port);
  const workerCount = Number(workers ?? benchWorkers());
  const stats = { failedAttempts: 0, errors: {} };
  try {
    // 1. Everyone connected (full handshakes), tickets saved.
    log(`connecting ${n} devices to ${server.mqttUrl}`);
    const t = performance.now();
    await pool(n, 256, (i) => reconnect(devices[i], port, stats));
    log(
      `all ${n} connected in ${round((performance.now() - t) / 1000, 1)} s (${stats.failedAttempts} retried attempts)`,
    );
    await sleep(1_000); // TLS 1.3 tickets trail the CONNACK
    for (const d of devices) d.session = d.latest();
    const withTicket = devices.filter((d) => d.session).length;

    // 2. Restart the server; every device reconnects as soon as its socket closes.
    stats.failedAttempts = 0;
    stats.errors = {};
    for (const d of devices) d.backAt = null;
    const t0 = performance.now();
    const back = devices.map(
      (d) =>
        new Promise((resolve) => {
          const go = () => reconnect(d, port, stats).then(resolve);
          if (!d.socket) return go();
          d.socket.once('close', go);
        }),
    );
    log('restarting the server (SIGTERM, start again on the same port and data dir)');
    await server.stop();
    const down = performance.now();
    server = await startServe({ ...env, FLEETGATE_MQTT_PORT: String(port) });
    const up = performance.now();
    const cpu0 = treeCpuSeconds(server.pid);
    log(`server back after ${round(up - t0, 0)} ms (stop ${round(down - t0, 0)} ms); waiting for every device`);
    const progress = setInterval(() => log(`${devices.filter((d) => d.backAt).length}/${n} back`), 2_000);
    // Unref: a pending 2-minute timer would keep the process alive after the result.
    await Promise.race([Promise.all(back), sleep(120_000, undefined, { ref: false })]);
    clearInterval(progress);
    const cpu = treeCpuSeconds(server.pid) - cpu0;
    const returned = devices.filter((d) => d.backAt);
    const resumed = returned.filter((d) => d.reused).length;
    const times = returned.map((d) => d.backAt - up).sort((a, b) => a - b);
    const result = {
      stormDevices: n,
      stormWorkers: workerCount,
      stormReconnectMs: returned.length === n ? round(Math.max(...returned.map((d) => d.backAt)) - t0, 0) : null,
      stormResumedShare: round(resumed / n, 3),
      stormBack: returned.length,
      stormTicketsHeld: withTicket,
      stormServerDownMs: round(up - down, 0),
      stormServerStopMs: round(down - t0, 0),
      stormAfterUpP50Ms: round(percentile(times, 50), 0),
      stormAfterUpP99Ms: round(percentile(times, 99), 0),
      stormRetriedAttempts: stats.failedAttempts,
      stormRetryCauses: stats.errors,
      stormBrokerCpuMsPerReconnect: round((cpu * 1000) / Math.max(1, returned.length), 3),
      stormHostLoadAvg1: round(loadavg()[0], 2),
    };
    log(JSON.stringify(result));
    return result;
  } finally {
    for (const d of devices) d.socket?.destroy();
    await server.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const result = await benchStorm({
    quick: process.argv.includes('--quick'),
    fresh: process.argv.includes('--fresh'),
    ...(arg('--devices') ? { devices: Number(arg('--devices')) } : {}),
    ...(arg('--workers') ? { workers: Number(arg('--workers')) } : {}),
  });
  console.log(JSON.stringify(result));
}
