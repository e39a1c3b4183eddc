// Broker benchmark: fleetgate's mTLS MQTT broker against mosquitto in the same run, with the same
// certificates (enrolled through EST once) and the same client load (bench/mqtt-load.mjs: raw
// tls.connect + hand-built MQTT 3.1.1 packets; our broker also with 5.0 ones). Broker CPU comes
// from /proc of each broker's process tree (utime + stime), never from wall time: the load
// generator shares the cores with the broker.
// Figures are described in bench/README.md.
import 'reflect-metadata';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { loadavg } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import * as x509 from '@peculiar/x509';
import {
  benchWorkers,
  cli,
  freshDatabase,
  loadCa,
  log as logLine,
  percentile,
  processTree,
  round,
  serverCertificate,
  startFloorServer,
  startMosquitto,
  startServe,
  tempDir,
  treeCpuSeconds,
  treeRssKiB,
} from './lib.mjs';
import { connectCycle, identityContext, mqttConnect, pool, publishPacket } from './mqtt-load.mjs';

const { webcrypto } = await import('node:crypto');
x509.cryptoProvider.set(webcrypto);

const startedAt = performance.now();
const log = (line) => logLine(`[${((performance.now() - startedAt) / 1000).toFixed(1).padStart(5)} s] ${line}`);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const SUBSCRIBER = 'bench-sub';

/**
 * Our broker's per-IP connection rate limit and per-connection publish rate limit are protections
 * for production; a benchmark from one IP at saturation would only measure the limiter. mosquitto
 * has neither, so both are off here (documented in bench/README.md).
 */
export const OUR_BROKER_ENV = { FLEETGATE_MQTT_CONN_RATE_PER_IP: '0', FLEETGATE_MQTT_PUBLISH_RATE: '0' };

// Per-round sizes: each broker runs `rounds` rounds of every connect/throughput/QoS 0 phase.
export const QUICK = {
  devices: 1000, // also the idle connections held
  rounds: 2,
  connects: 400,
  concurrency: 16,
  warmUpConnects: 400,
  throughputConnects: 800,
  throughputConcurrency: 128,
  publishers: 20,
  qos0Seconds: 2.5,
  qos0Window: 4000,
  revokes: 50,
};
export const FULL = {
  devices: 5000,
  rounds: 3,
  connects: 1000,
  concurrency: 16,
  warmUpConnects: 1000,
  throughputConnects: 2500,
  throughputConcurrency: 256,
  publishers: 50,
  qos0Seconds: 6,
  qos0Window: 4000,
  revokes: 200,
};

const pem = (label, der) =>
  `-----BEGIN ${label}-----\n${Buffer.from(der)
    .toString('base64')
    .replace(/.{64}/g, '$&\n')
    .replace(/\n?$/, '\n')}-----END ${label}-----\n`;

export async function keyAndCsr(cn) {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${cn}`, keys, signingAlgorithm: ALG });
  const keyPem = pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { keyPem, csrDer: Buffer.from(csr.rawData) };
}

function post(url, { body, headers, ca, agent }) {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', ca, agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode === 200) resolve(text);
        else reject(new Error(`POST ${new URL(url).pathname}: HTTP ${res.statusCode} ${text.slice(0, 200)}`));
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Enrolls every token through EST simpleenroll; resolves with [{ id, keyPem, certPem }]. */
export async function enrollDevices(apiUrl, caPem, tokens, concurrency = 32) {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency, ca: caPem });
  const devices = new Array(tokens.length);
  const r = await pool(tokens.length, concurrency, async (i) => {
    const { deviceId, token } = tokens[i];
    const { keyPem, csrDer } = await keyAndCsr(deviceId);
    const b64 = await post(`${apiUrl}/.well-known/est/simpleenroll`, {
      body: csrDer.toString('base64'),
      ca: caPem,
      agent,
      headers: {
        'content-type': 'application/pkcs10',
        authorization: `Basic ${Buffer.from(`${deviceId}:${token}`).toString('base64')}`,
      },
    });
    const certs = new x509.X509Certificates();
    certs.import(Buffer.from(b64.replace(/\s+/g, ''), 'base64'));
    const leaf = certs.find((c) => c.subject === `CN=${deviceId}`) ?? certs[0];
    devices[i] = { id: deviceId, keyPem, certPem: leaf.toString('pem') };
  });
  agent.destroy();
  if (r.failed > 0) throw new Error(`enrollment failed for ${r.failed} devices: ${JSON.stringify(r.errors)}`);
  return devices;
}

/**
 * The subscriber's service identity: `fleetgate service create` when the CLI has it; otherwise a
 * service certificate (SAN urn:fleetgate:service:<name>) signed in-process by the same CA.
 */
async function serviceIdentity(env, dataDir, apiUrl, dir) {
  try {
    await cli(['service', 'create', SUBSCRIBER, '--out', dir], env);
    return {
      id: SUBSCRIBER,
      keyPem: readFileSync(path.join(dir, `${SUBSCRIBER}.key`), 'utf8'),
      certPem: readFileSync(path.join(dir, `${SUBSCRIBER}.crt`), 'utf8'),
      via: 'cli',
    };
  } catch {
    const { caMod, ca } = await loadCa(dataDir);
    const { keyPem, csrDer } = await keyAndCsr(SUBSCRIBER);
    const checked = await caMod.checkCsr(new Uint8Array(csrDer), { identity: 'service' });
    if (!checked.ok) throw new Error(`service CSR refused: ${checked.error.message}`);
    const issued = await caMod.issueIdentityCertificate(ca, checked.value, {
      now: new Date(),
      validityDays: 1,
      crlUrl: `${apiUrl}/crl`,
      ocspUrl: `${apiUrl}/ocsp`,
      kind: 'service',
    });
    if (!issued.ok) throw new Error(`service certificate: ${issued.error.message}`);
    return { id: SUBSCRIBER, keyPem, certPem: issued.value.pem, via: 'in-process' };
  }
}

/** Watches a broker's process tree: any process of it that vanishes counts as a crash. */
export function crashWatch(broker) {
  const seen = new Set(processTree(broker.pid));
  const gone = new Set();
  const tick = () => {
    for (const p of processTree(broker.pid)) if (existsSync(`/proc/${p}`)) seen.add(p);
    for (const p of seen) if (!existsSync(`/proc/${p}`)) gone.add(p);
  };
  const timer = setInterval(tick, 250);
  return {
    check: () => {
      tick();
      return gone.size;
    },
    stop: () => clearInterval(timer),
  };
}

/** Broker CPU for `count` connect cycles (optionally offering each device's saved session). */
async function connectPhase(target, devices, { count, concurrency, resume }) {
  const cpu0 = treeCpuSeconds(target.pid);
  let reused = 0;
  const t0 = performance.now();
  const r = await pool(count, concurrency, async (i) => {
    const d = devices[i % devices.length];
    const session = resume ? target.sessions.get(d.id) : undefined;
    const res = await connectCycle({
      port: target.port,
      secureContext: d.ctx,
      clientId: d.id,
      session,
      protocolVersion: target.protocolVersion ?? 4,
    });
    if (res.reused) reused++;
    if (res.session) target.sessions.set(d.id, res.session);
  });
  const seconds = (performance.now() - t0) / 1000;
  const cpu = treeCpuSeconds(target.pid) - cpu0;
  return {
    ok: r.ok,
    failed: r.failed,
    errors: r.errors,
    reused,
    perSec: r.ok / seconds,
    cpuMsPer1000: r.ok > 0 ? (cpu * 1000 * 1000) / r.ok : Number.NaN,
  };
}

/**
 * Unmeasured connects before the first round: a Node broker's connect path runs interpreted until
 * V8 has optimized it (the first few hundred connects cost up to 30% more), and a broker in
 * production runs warm. mosquitto gets the same load, for symmetry.
 */
async function warmUp(target, devices, p) {
  for (const resume of [false, true]) {
    await connectPhase(target, devices, { count: p.warmUpConnects, concurrency: p.concurrency, resume });
  }
}

/** Opens one idle connection per device and holds them; resolves with RSS growth per connection. */
async function idlePhase(target, devices) {
  await sleep(500);
  const rss0 = treeRssKiB(target.pid);
  const held = [];
  const r = await pool(devices.length, 64, async (i) => {
    const d = devices[i];
    const c = await mqttConnect({ port: target.port, secureContext: d.ctx, clientId: d.id });
    held.push(c.socket);
  });
  await sleep(2000);
  const rss1 = treeRssKiB(target.pid);
  const closed = held.map((s) => once(s, 'close').catch(() => {}));
  for (const s of held) s.destroy();
  await Promise.all(closed);
  return { held: held.length, failed: r.failed, errors: r.errors, kibPerConn: (rss1 - rss0) / held.length };
}

/**
 * QoS 0 fan-in: `publishers` devices publish to devices/<id>/telemetry as fast as a shared window
 * of un-delivered messages allows (no unbounded queue in either broker), one subscriber on
 * devices/+/telemetry counts deliveries. Messages the broker drops are written off after 250 ms
 * without progress so the window cannot stall.
 */
async function qos0Phase(target, devices, subscriber, { publishers, seconds, window = 4000, batch = 10 }) {
  const counter = new SharedArrayBuffer(4);
  const received = new Int32Array(counter);
  const worker = new Worker(new URL('./qos0-subscriber.mjs', import.meta.url), {
    workerData: {
      port: target.port,
      identity: { id: subscriber.id, keyPem: subscriber.keyPem, certPem: subscriber.certPem },
      caPem: subscriber.caPem,
      filter: 'devices/+/telemetry',
      counter,
    },
  });
  const workerDone = once(worker, 'exit');
  const [first] = await Promise.race([once(worker, 'message'), once(worker, 'error').then(([e]) => Promise.reject(e))]);
  if (first.granted === undefined || first.granted === 0x80) {
    await worker.terminate();
    throw new Error(`SUBSCRIBE devices/+/telemetry refused: ${JSON.stringify(first)}`);
  }

  const pubs = await Promise.all(
    devices.slice(0, publishers).map(async (d) => {
      const protocolVersion = target.protocolVersion ?? 4;
      const c = await mqttConnect({ port: target.port, secureContext: d.ctx, clientId: d.id, protocolVersion });
      const one = publishPacket(`devices/${d.id}/telemetry`, Buffer.alloc(64, 0x61), undefined, protocolVersion);
      return { socket: c.socket, packets: Buffer.concat(Array.from({ length: batch }, () => one)) };
    }),
  );
  let sent = 0;
  let writtenOff = 0;
  let stop = false;
  let lastProgress = { at: performance.now(), value: 0 };
  const got = () => Atomics.load(received, 0);
  const loops = pubs.map(async ({ socket, packets }) => {
    while (!stop && !socket.destroyed) {
      const now = got();
      if (sent - now - writtenOff >= window) {
        if (now !== lastProgress.value) lastProgress = { at: performance.now(), value: now };
        else if (performance.now() - lastProgress.at > 250) {
          // Dropped by the broker: written off, and the clock restarts, so one stall lets at most
          // one more window in (without the reset every later check wrote off again at once and
          // a stalled broker got an unbounded flood).
          writtenOff = sent - now;
          lastProgress = { at: performance.now(), value: now };
        }
        await sleep(1);
        continue;
      }
      sent += batch;
      if (!socket.write(packets)) await once(socket, 'drain');
      else if (sent % (batch * 8) === 0) await new Promise(setImmediate);
    }
  });
  await sleep(1000); // warm-up
  const r0 = got();
  const c0 = treeCpuSeconds(target.pid);
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const r1 = got();
  const c1 = treeCpuSeconds(target.pid);
  const t1 = performance.now();
  stop = true;
  await Promise.all(loops);
  const closes = pubs.map((p) => once(p.socket, 'close').catch(() => {}));
  for (const p of pubs) p.socket.destroy();
  worker.postMessage('stop');
  await Promise.all(closes);
  await Promise.race([workerDone, sleep(2000).then(() => worker.terminate())]);
  return {
    msgsPerSec: ((r1 - r0) * 1000) / (t1 - t0),
    cpuUsPerMsg: r1 > r0 ? ((c1 - c0) * 1e6) / (r1 - r0) : Number.NaN,
    sent,
    received: got(),
    writtenOff,
  };
}

/** Revokes connected devices one at a time; latency from the API call returning to the socket close. */
async function revokePhase(server, target, devices, { caPem, adminToken }) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: caPem });
  const conns = [];
  for (const d of devices) {
    const c = await mqttConnect({ port: target.port, secureContext: d.ctx, clientId: d.id });
    const closedAt = new Promise((resolve) => c.socket.once('close', () => resolve(performance.now())));
    conns.push({ d, socket: c.socket, closedAt });
  }
  const afterReturn = [];
  const afterCall = [];
  let timeouts = 0;
  let closedBeforeReturn = 0;
  for (const { d, socket, closedAt } of conns) {
    const t0 = performance.now();
    await post(`${server.apiUrl}/api/v1/devices/${encodeURIComponent(d.id)}/revoke`, {
      body: JSON.stringify({ reason: 'keyCompromise' }),
      agent,
      ca: caPem,
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    });
    const t1 = performance.now();
    const closed = await Promise.race([closedAt, sleep(5000).then(() => null)]);
    if (closed === null) {
      timeouts++;
      socket.destroy();
      continue;
    }
    if (closed <= t1) closedBeforeReturn++;
    afterReturn.push(Math.max(0, closed - t1));
    afterCall.push(closed - t0);
    await sleep(10);
  }
  agent.destroy();
  afterReturn.sort((a, b) => a - b);
  afterCall.sort((a, b) => a - b);
  return {
    p50: percentile(afterReturn, 50),
    p99: percentile(afterReturn, 99),
    max: afterReturn.at(-1),
    fromCallP50: percentile(afterCall, 50),
    fromCallP99: percentile(afterCall, 99),
    timeouts,
    closedBeforeReturn,
  };
}

/**
 * Machine-noise control: the cores are shared (with the load generator and, on a dev box, with
 * everything else), so the connect, throughput and QoS 0 phases run in rounds that alternate the
 * brokers (A B, B A, ...). CPU figures pool CPU and connects over all rounds; wall-clock figures
 * (connects/s, msgs/s) keep each broker's best round.
 */
async function measureRound(target, devices, subscriber, p, r) {
  const tag = `broker[${target.name}] round ${r + 1}/${p.rounds}`;
  const out = {};
  out.full = await connectPhase(target, devices, { count: p.connects, concurrency: p.concurrency, resume: false });
  log(`${tag}: ${p.connects} full connects: ${brief(out.full)}`);
  out.resumed = await connectPhase(target, devices, { count: p.connects, concurrency: p.concurrency, resume: true });
  log(`${tag}: ${p.connects} resumed connects: ${brief(out.resumed)}`);
  if (target.connectOnly) return out;
  if (!target.mqtt5) {
    out.throughput = await connectPhase(target, devices, {
      count: p.throughputConnects,
      concurrency: p.throughputConcurrency,
      resume: false,
    });
    log(`${tag}: throughput (${p.throughputConcurrency} parallel): ${brief(out.throughput)}`);
  }
  out.qos0 = await qos0Phase(target, devices, subscriber, {
    publishers: p.publishers,
    seconds: p.qos0Seconds,
    window: p.qos0Window,
  });
  log(`${tag}: QoS 0 fan-in (${p.publishers} -> 1): ${brief(out.qos0)}`);
  return out;
}

function brief(o) {
  return JSON.stringify(
    Object.fromEntries(
      Object.entries(o)
        .filter(([k, v]) => k !== 'errors' || Object.keys(v).length > 0)
        .map(([k, v]) => [k, typeof v === 'number' ? round(v, 1) : v]),
    ),
  );
}

/** Pools the rounds of one broker into its figures. */
function pooled(rounds, connectOnly = false) {
  const merge = (key) => {
    const ok = rounds.reduce((n, r) => n + r[key].ok, 0);
    return {
      ok,
      failed: rounds.reduce((n, r) => n + r[key].failed, 0),
      reused: rounds.reduce((n, r) => n + r[key].reused, 0),
      cpuMsPer1000: rounds.reduce((n, r) => n + r[key].cpuMsPer1000 * r[key].ok, 0) / ok,
      perSec: Math.max(...rounds.map((r) => r[key].perSec)),
    };
  };
  if (connectOnly) return { full: merge('full'), resumed: merge('resumed') };
  return {
    full: merge('full'),
    resumed: merge('resumed'),
    ...(rounds[0].throughput ? { throughput: merge('throughput') } : {}),
    qos0: {
      msgsPerSec: Math.max(...rounds.map((r) => r.qos0.msgsPerSec)),
      cpuUsPerMsg: rounds.reduce((n, r) => n + r.qos0.cpuUsPerMsg, 0) / rounds.length,
      writtenOff: rounds.reduce((n, r) => n + r.qos0.writtenOff, 0),
    },
  };
}

/**
 * The cost of clustering: broker CPU (primary + workers, from /proc) per full-handshake connect
 * with FLEETGATE_WORKERS=2 against FLEETGATE_WORKERS=1, two fresh servers on the same data dir and
 * database, alternating rounds of the same connect load.
 */
async function workersPhase(env, devices, p) {
  const servers = [];
  try {
    for (const workers of [1, 2]) {
      const s = await startServe({ ...env, FLEETGATE_WORKERS: String(workers) });
      servers.push({
        workers,
        server: s,
        target: { pid: s.pid, port: Number(new URL(s.mqttUrl).port), sessions: new Map() },
      });
    }
    for (const x of servers) await warmUp(x.target, devices, p);
    const totals = new Map(servers.map((x) => [x.workers, { cpu: 0, ok: 0, failed: 0 }]));
    for (let r = 0; r < p.rounds; r++) {
      for (const x of r % 2 === 0 ? servers : [...servers].reverse()) {
        const res = await connectPhase(x.target, devices, {
          count: p.connects,
          concurrency: p.concurrency,
          resume: false,
        });
        const t = totals.get(x.workers);
        t.cpu += (res.cpuMsPer1000 * res.ok) / 1000;
        t.ok += res.ok;
        t.failed += res.failed;
        log(`workers=${x.workers} round ${r + 1}/${p.rounds}: ${p.connects} full connects: ${brief(res)}`);
      }
    }
    const per = (w) => (totals.get(w).cpu * 1000) / totals.get(w).ok;
    return { one: per(1), two: per(2), failed: totals.get(1).failed + totals.get(2).failed };
  } finally {
    for (const x of servers) await x.server.stop();
  }
}

const ratio = (a, b) =>
  a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? null : round(a / b, 3);
const num = (v, d = 2) => (v == null || !Number.isFinite(v) ? null : round(v, d));

export async function benchBroker(opts = {}) {
  const p = { ...(opts.quick ? QUICK : FULL), ...opts };
  const db = await freshDatabase();
  const dataDir = tempDir();
  const work = path.join(dataDir, 'bench');
  mkdirSync(work);
  const env = { FLEETGATE_DATA_DIR: dataDir, DATABASE_URL: db.url, ...OUR_BROKER_ENV };
  const stops = [];
  let crashes = 0;
  try {
    // 1. Identities: enroll every device through EST with a throw-away server process.
    let server = await startServe(env);
    stops.push(() => server.stop());
    const caPem = await cli(['ca', 'export'], env);
    const cafile = path.join(work, 'ca.pem');
    writeFileSync(cafile, caPem);
    const tokens = JSON.parse(
      await cli(['token', 'create', '--count', String(p.devices), '--prefix', 'bench-', '--json'], env),
    );
    log(`broker: enrolling ${p.devices} devices through EST`);
    const t0 = performance.now();
    const devices = await enrollDevices(server.apiUrl, caPem, tokens);
    log(`broker: enrolled in ${round((performance.now() - t0) / 1000, 1)} s; building TLS contexts`);
    for (const d of devices) d.ctx = identityContext(d, caPem);
    const subscriber = await serviceIdentity(env, dataDir, server.apiUrl, work);
    subscriber.caPem = caPem;
    log(`broker: subscriber identity ${subscriber.id} (${subscriber.via})`);

    // 2. A fresh server process for the broker phases (enrollment must not inflate its RSS).
    await server.stop();
    server = await startServe(env);
    const ourPort = server.mqttUrl ? Number(new URL(server.mqttUrl).port) : null;
    const mosqCert = await serverCertificate(dataDir, work, 'mosquitto');
    const mosq = await startMosquitto({ dir: work, cafile, ...mosqCert });
    stops.push(() => mosq.stop());

    const targets = [];
    if (ourPort) {
      targets.push({ name: 'ours', pid: server.pid, port: ourPort, sessions: new Map() });
      // The same broker process again with MQTT 5.0 CONNECTs and PUBLISHes (issue 20 targets): its
      // own ticket store, its own place in the alternating rounds, no throughput phase.
      targets.push({
        name: 'ours@5',
        pid: server.pid,
        port: ourPort,
        sessions: new Map(),
        protocolVersion: 5,
        mqtt5: true,
      });
    } else log('broker: `fleetgate serve` shows no MQTT listener yet: our broker figures are null');
    targets.push({ name: 'mosquitto', pid: mosq.pid, port: mosq.port, sessions: new Map() });
    // The floor: Node's TLS alone (bench/floor-server.mjs), same certificate as mosquitto's, same
    // OpenSSL settings as ours. Connect and idle phases only: it is not a broker.
    const floor = await startFloorServer('mqtt', { ...mosqCert, cafile });
    stops.push(() => floor.stop());
    targets.push({ name: 'floor', pid: floor.pid, port: floor.port, sessions: new Map(), connectOnly: true });
    // ours@5 is the same process as ours: watched once.
    const watches = targets.filter((t) => !t.connectOnly && !t.mqtt5).map((t) => crashWatch(t));
    const results = {};
    try {
      const idle = {};
      for (const t of targets.filter((x) => !x.mqtt5)) {
        log(`broker[${t.name}]: idle memory, ${devices.length} connections held`);
        idle[t.name] = await idlePhase(t, devices);
        log(`broker[${t.name}]: idle: ${brief(idle[t.name])}`);
      }
      for (const t of targets) await warmUp(t, devices, p);
      const rounds = Object.fromEntries(targets.map((t) => [t.name, []]));
      for (let r = 0; r < p.rounds; r++) {
        for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
          rounds[t.name].push(await measureRound(t, devices, subscriber, p, r));
        }
      }
      for (const t of targets) results[t.name] = { idle: idle[t.name], ...pooled(rounds[t.name], t.connectOnly) };
    } finally {
      for (const w of watches) {
        crashes += w.check();
        w.stop();
      }
    }
    const ours = results.ours;
    const ours5 = results['ours@5'];
    if (ours) {
      log(`broker[ours]: revoking ${p.revokes} connected devices one at a time`);
      const adminToken = readFileSync(path.join(dataDir, 'operator.token'), 'utf8').trim();
      const watch = crashWatch(targets[0]);
      ours.revoke = await revokePhase(server, targets[0], devices.slice(-p.revokes), { caPem, adminToken });
      crashes += watch.check();
      watch.stop();
      log(`broker[ours]:   ${JSON.stringify(ours.revoke)}`);
    }
    if (server.exited()) crashes += 1;
    if (mosq.exited()) crashes += 1;
    const defaultWorkers = benchWorkers();
    // The clustering cost on its own servers, with the main ones stopped (their CPU is not shared).
    await server.stop();
    await mosq.stop();
    await floor.stop();
    log('broker: clustering cost, FLEETGATE_WORKERS=2 vs 1 (full connects, alternating rounds)');
    const wk = await workersPhase(env, devices, p);
    log(`broker: workers: ${brief(wk)}`);
    const m = results.mosquitto;
    const f = results.floor;
    return {
      fullConnectCpuVsMosquitto: ratio(ours?.full.cpuMsPer1000, m.full.cpuMsPer1000),
      ourFullConnectCpuMs: num(ours?.full.cpuMsPer1000, 0),
      mosquittoFullConnectCpuMs: num(m.full.cpuMsPer1000, 0),
      resumedConnectCpuVsMosquitto: ratio(ours?.resumed.cpuMsPer1000, m.resumed.cpuMsPer1000),
      ourResumedConnectCpuMs: num(ours?.resumed.cpuMsPer1000, 0),
      mosquittoResumedConnectCpuMs: num(m.resumed.cpuMsPer1000, 0),
      resumedShare: num(ours ? ours.resumed.reused / ours.resumed.ok : null, 3),
      mosquittoResumedShare: num(m.resumed.reused / m.resumed.ok, 3),
      // MQTT 5.0 against 3.1.1 CONNECTs on our broker, same process, same rounds (issue 20 targets).
      mqtt5FullConnectCpuVsMqtt311: ratio(ours5?.full.cpuMsPer1000, ours?.full.cpuMsPer1000),
      mqtt5ResumedConnectCpuVsMqtt311: ratio(ours5?.resumed.cpuMsPer1000, ours?.resumed.cpuMsPer1000),
      ourMqtt5FullConnectCpuMs: num(ours5?.full.cpuMsPer1000, 0),
      ourMqtt5ResumedConnectCpuMs: num(ours5?.resumed.cpuMsPer1000, 0),
      mqtt5ResumedShare: num(ours5 ? ours5.resumed.reused / ours5.resumed.ok : null, 3),
      resumedVsFullCpu: ratio(ours?.resumed.cpuMsPer1000, ours?.full.cpuMsPer1000),
      // The broker's cost targets (issue 13): ratios to Node's TLS floor measured in this run.
      fullConnectCpuVsFloor: ratio(ours?.full.cpuMsPer1000, f.full.cpuMsPer1000),
      resumedConnectCpuVsFloor: ratio(ours?.resumed.cpuMsPer1000, f.resumed.cpuMsPer1000),
      idleMemPerConnVsFloor: ratio(ours?.idle.kibPerConn, f.idle.kibPerConn),
      qos0CpuPerMsgVsMosquitto: ratio(ours?.qos0.cpuUsPerMsg, m.qos0.cpuUsPerMsg),
      // Node's TLS stack alone (no MQTT, no broker) under the same load: no Node broker goes lower.
      nodeTlsFloorFullConnectCpuVsMosquitto: ratio(f.full.cpuMsPer1000, m.full.cpuMsPer1000),
      nodeTlsFloorResumedConnectCpuVsMosquitto: ratio(f.resumed.cpuMsPer1000, m.resumed.cpuMsPer1000),
      nodeTlsFloorFullConnectCpuMs: num(f.full.cpuMsPer1000, 0),
      nodeTlsFloorResumedConnectCpuMs: num(f.resumed.cpuMsPer1000, 0),
      nodeTlsFloorIdleKiBPerConn: num(f.idle.kibPerConn, 1),
      connectThroughputVsMosquitto: ratio(ours?.throughput.perSec, m.throughput.perSec),
      // Our broker runs with its default workers (FLEETGATE_WORKERS, else the number of cores).
      ourWorkers: defaultWorkers,
      workersCpuPerConnVsOne: ratio(wk.two, wk.one),
      oneWorkerFullConnectCpuMs: num(wk.one, 0),
      twoWorkersFullConnectCpuMs: num(wk.two, 0),
      ourConnectsPerSec: num(ours?.throughput.perSec, 0),
      mosquittoConnectsPerSec: num(m.throughput.perSec, 0),
      // Broker CPU per 1,000 connects while saturated: the noise-free side of the throughput figure.
      ourSaturatedConnectCpuMs: num(ours?.throughput.cpuMsPer1000, 0),
      mosquittoSaturatedConnectCpuMs: num(m.throughput.cpuMsPer1000, 0),
      idleMemPerConnVsMosquitto: ratio(ours?.idle.kibPerConn, m.idle.kibPerConn),
      ourIdleKiBPerConn: num(ours?.idle.kibPerConn, 1),
      mosquittoIdleKiBPerConn: num(m.idle.kibPerConn, 1),
      idleConnections: p.devices,
      qos0MsgsVsMosquitto: ratio(ours?.qos0.msgsPerSec, m.qos0.msgsPerSec),
      ourQos0MsgsPerSec: num(ours?.qos0.msgsPerSec, 0),
      mosquittoQos0MsgsPerSec: num(m.qos0.msgsPerSec, 0),
      // Ours with MQTT 5.0 publishers against mosquitto with 3.1.1 ones (the subscriber stays 3.1.1).
      qos0Msgs5VsMosquitto: ratio(ours5?.qos0.msgsPerSec, m.qos0.msgsPerSec),
      ourQos0Msgs5PerSec: num(ours5?.qos0.msgsPerSec, 0),
      ourQos0Mqtt5CpuUsPerMsg: num(ours5?.qos0.cpuUsPerMsg, 1),
      ourQos0CpuUsPerMsg: num(ours?.qos0.cpuUsPerMsg, 1),
      mosquittoQos0CpuUsPerMsg: num(m.qos0.cpuUsPerMsg, 1),
      revokeDisconnectP50Ms: num(ours?.revoke?.p50, 1),
      revokeDisconnectP99Ms: num(ours?.revoke?.p99, 1),
      // From the start of the revoke call: the close often beats the API's answer.
      revokeDisconnectFromCallP50Ms: num(ours?.revoke?.fromCallP50, 1),
      revokeDisconnectFromCallP99Ms: num(ours?.revoke?.fromCallP99, 1),
      revokeClosedBeforeReturn: ours?.revoke ? ours.revoke.closedBeforeReturn : null,
      revokeTimeouts: ours?.revoke ? ours.revoke.timeouts : null,
      qos0WrittenOff: Object.values(results).reduce((n, r) => n + (r.qos0?.writtenOff ?? 0), 0),
      brokerConnectFailures:
        wk.failed +
        Object.values(results).reduce(
          (n, r) => n + (r.idle?.failed ?? 0) + r.full.failed + r.resumed.failed + (r.throughput?.failed ?? 0),
          0,
        ),
      crashes,
      hostLoadAvg1: round(loadavg()[0], 2),
    };
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await db.drop();
    rmSync(dataDir, { recursive: true, force: true }); // CA keys and device keys of a throw-away run
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const quick = process.argv.includes('--quick');
  // FLEETGATE_BENCH_BROKER='{"qos0Window":20000}' overrides sizes for experiments.
  const result = await benchBroker({ quick, ...JSON.parse(process.env.FLEETGATE_BENCH_BROKER ?? '{}') });
  console.log(JSON.stringify(result));
}
