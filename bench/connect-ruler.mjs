// The connect ruler: the fastest loop for A/B'ing the broker's connect path (issue 13 item 3).
// Raw MQTT 3.1.1 CONNECT over TLS 1.3 with client certificates (bench/mqtt-load.mjs), N connects
// per round with K in flight, full handshakes then resumed ones, broker CPU from /proc of each
// server's process tree. Every target is up at the same time and the rounds alternate between
// them (A B, B A, ...), so a shared machine's load falls on all of them alike.
//
//   node bench/connect-ruler.mjs [--repo NAME=DIR]... [--floor] [--rounds 3] [--connects 1500]
//        [--in-flight 8] [--devices 200] [--workers 1] [--idle 0] [--node-args="--cpu-prof ..."]
//
// --repo NAME=DIR: a checkout whose `npm run build` output runs as one target (default: this one,
// named "this"); several A/B different builds, e.g. a `git worktree` of the base commit. Each gets
// its own copy of the data dir (same CA, same devices) and shares the database.
// --mqtt5 also runs every fleetgate target with MQTT 5.0 CONNECTs (target NAME@5, same server) and
// reports mqtt5FullConnectCpuVsMqtt311 / mqtt5ResumedConnectCpuVsMqtt311 per target.
// --floor adds bench/floor-server.mjs (bare Node TLS), with --workers processes. --idle N holds N idle connections per target
// first and reports RSS growth per connection. --node-args go to every `fleetgate serve` (e.g.
// "--cpu-prof --cpu-prof-dir=/tmp/prof" or "--heap-prof"); profiles are written when it stops.
// --heap-snapshots DIR (with --idle N): each fleetgate target's broker processes (the leaves of its
// process tree) write a V8 heap snapshot before the idle connections open and one while they are
// held (--heapsnapshot-signal), as DIR/<target>-<pid>-{before,after}.heapsnapshot, for
// bench/heap-summary.mjs.
// Prints one JSON line: per target µs of broker CPU per full / resumed connect (pooled rounds)
// and the ratios to the floor when it ran.
import 'reflect-metadata';
import { cpSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  cli,
  cpuSeconds,
  freshDatabase,
  log,
  processTree,
  REPO,
  round,
  serverCertificate,
  startFloorServer,
  startServe,
  tempDir,
  treeCpuSeconds,
  treeRssKiB,
} from './lib.mjs';
import { connectCycle, identityContext, mqttConnect, pool } from './mqtt-load.mjs';

const { values: o } = parseArgs({
  options: {
    repo: { type: 'string', multiple: true, default: [] },
    floor: { type: 'boolean', default: false },
    mqtt5: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '3' },
    connects: { type: 'string', default: '1500' },
    'in-flight': { type: 'string', default: '8' },
    devices: { type: 'string', default: '200' },
    workers: { type: 'string', default: '1' },
    idle: { type: 'string', default: '0' },
    'warm-up': { type: 'string', default: '600' },
    'node-args': { type: 'string', default: '' },
    'heap-snapshots': { type: 'string' },
  },
});
const repos = o.repo.length ? o.repo.map((r) => r.split('=')) : [['this', REPO]];
const rounds = Number(o.rounds);
const connects = Number(o.connects);
const inFlight = Number(o['in-flight']);
const deviceCount = Math.max(Number(o.devices), Number(o.idle));
const snapshotDir = o['heap-snapshots'] ? path.resolve(o['heap-snapshots']) : null;
if (snapshotDir) mkdirSync(snapshotDir, { recursive: true });
const nodeArgs = [
  ...o['node-args'].split(' ').filter(Boolean),
  ...(snapshotDir ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapshotDir}`] : []),
];
const started = performance.now();
const say = (line) => log(`[${((performance.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);

/** CPU seconds of a target's processes other than its broker processes (a cluster's primary). */
function primaryCpuSeconds(pid) {
  const brokers = new Set(brokerPids(pid));
  let total = 0;
  for (const p of processTree(pid)) {
    if (brokers.has(p)) continue;
    try {
      total += cpuSeconds(p);
    } catch {}
  }
  return total;
}

async function cycles(target, devices, resume, count) {
  const cpu0 = treeCpuSeconds(target.pid);
  const primary0 = primaryCpuSeconds(target.pid);
  let reused = 0;
  const r = await pool(count, inFlight, async (i) => {
    const d = devices[i % devices.length];
    const res = await connectCycle({
      port: target.port,
      secureContext: d.ctx,
      clientId: d.id,
      session: resume ? target.sessions.get(d.id) : undefined,
      protocolVersion: target.protocolVersion ?? 4,
    });
    if (res.reused) reused++;
    if (res.session) target.sessions.set(d.id, res.session);
  });
  if (r.failed) say(`${target.name}: ${r.failed} failed: ${JSON.stringify(r.errors)}`);
  return {
    cpu: treeCpuSeconds(target.pid) - cpu0,
    primary: primaryCpuSeconds(target.pid) - primary0,
    ok: r.ok,
    reused,
  };
}

/** The broker processes of a target: the leaves of its process tree (workers, or the one process). */
function brokerPids(pid) {
  const tree = processTree(pid);
  const parents = new Set();
  for (const p of tree) {
    try {
      parents.add(Number(readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ')[1]));
    } catch {}
  }
  return tree.filter((p) => !parents.has(p));
}

/** SIGUSR2 to each broker process; waits until each snapshot file is written and stops growing. */
async function heapSnapshots(target, tag) {
  if (!snapshotDir || target.name === 'floor') return;
  for (const pid of brokerPids(target.pid)) {
    const mine = () => readdirSync(snapshotDir).filter((f) => f.includes(`.${pid}.`) && f.endsWith('.heapsnapshot'));
    const had = new Set(mine());
    process.kill(pid, 'SIGUSR2');
    let file = null;
    let size = -1;
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000));
      file ??= mine().find((f) => !had.has(f)) ?? null;
      if (!file) continue;
      const now = statSync(path.join(snapshotDir, file)).size;
      if (now > 0 && now === size) break;
      size = now;
    }
    renameSync(path.join(snapshotDir, file), path.join(snapshotDir, `${target.name}-${pid}-${tag}.heapsnapshot`));
    say(`${target.name}: heap snapshot ${tag} of ${pid} (${(size / 2 ** 20).toFixed(1)} MiB)`);
  }
}

async function idle(target, devices, n) {
  await heapSnapshots(target, 'before');
  const rss0 = treeRssKiB(target.pid);
  const held = [];
  await pool(n, 64, async (i) => {
    const c = await mqttConnect({ port: target.port, secureContext: devices[i].ctx, clientId: devices[i].id });
    held.push(c.socket);
  });
  await new Promise((r) => setTimeout(r, 2000));
  const kib = (treeRssKiB(target.pid) - rss0) / held.length;
  await heapSnapshots(target, 'after');
  await Promise.all(held.map((s) => new Promise((r) => s.once('close', r).destroy())));
  return kib;
}

const db = await freshDatabase();
const root = tempDir('fleetgate-ruler-');
const stops = [];
try {
  const base = path.join(root, '.enrolled');
  const env = {
    FLEETGATE_DATA_DIR: base,
    DATABASE_URL: db.url,
    FLEETGATE_MQTT_CONN_RATE_PER_IP: '0',
    FLEETGATE_MQTT_PUBLISH_RATE: '0',
  };
  const { enrollDevices } = await import('./broker.mjs');
  // The first target's build enrolls: the database schema is that build's.
  const enroller = await startServe(env, { bin: path.join(repos[0][1], 'server/bin/fleetgate.js') });
  const caPem = await cli(['ca', 'export'], env);
  const tokens = JSON.parse(
    await cli(['token', 'create', '--count', String(deviceCount), '--prefix', 'ruler-', '--json'], env),
  );
  const devices = await enrollDevices(enroller.apiUrl, caPem, tokens);
  await enroller.stop();
  for (const d of devices) d.ctx = identityContext(d, caPem);
  say(`enrolled ${devices.length} devices`);

  const targets = [];
  for (const [name, dir] of repos) {
    const dataDir = path.join(root, name);
    cpSync(base, dataDir, { recursive: true });
    rmSync(path.join(dataDir, 'serve.json'), { force: true });
    const s = await startServe(
      { ...env, FLEETGATE_DATA_DIR: dataDir, FLEETGATE_WORKERS: o.workers },
      { bin: path.join(dir, 'server/bin/fleetgate.js'), nodeArgs },
    );
    stops.push(() => s.stop());
    const port = Number(new URL(s.mqttUrl).port);
    targets.push({ name, pid: s.pid, port, sessions: new Map() });
    if (o.mqtt5) targets.push({ name: `${name}@5`, pid: s.pid, port, sessions: new Map(), protocolVersion: 5 });
  }
  if (o.floor) {
    const work = path.join(root, 'floor');
    mkdirSync(work);
    const cafile = path.join(work, 'ca.pem');
    writeFileSync(cafile, caPem);
    const cert = await serverCertificate(base, work, 'floor');
    // As many processes as the fleetgate targets' brokers (--workers), sharing the port the same way.
    const f = await startFloorServer('mqtt', { ...cert, cafile }, Number(o.workers));
    stops.push(() => f.stop());
    targets.push({ name: 'floor', pid: f.pid, port: f.port, sessions: new Map() });
  }
  const mem = {};
  if (Number(o.idle) > 0) {
    for (const t of targets) {
      mem[t.name] = round(await idle(t, devices, Number(o.idle)), 1);
      say(`${t.name}: idle ${mem[t.name]} KiB per connection`);
    }
  }
  for (const t of targets) {
    await cycles(t, devices, false, Number(o['warm-up']));
    await cycles(t, devices, true, Number(o['warm-up']));
  }
  const totals = Object.fromEntries(
    targets.map((t) => [t.name, { full: [0, 0], resumed: [0, 0], primary: 0, reused: 0 }]),
  );
  for (let r = 0; r < rounds; r++) {
    for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
      const full = await cycles(t, devices, false, connects);
      const resumed = await cycles(t, devices, true, connects);
      const x = totals[t.name];
      x.full[0] += full.cpu;
      x.full[1] += full.ok;
      x.resumed[0] += resumed.cpu;
      x.resumed[1] += resumed.ok;
      x.reused += resumed.reused;
      x.primary += full.primary + resumed.primary;
      const us = (c) => Math.round((c.cpu * 1e6) / c.ok);
      say(`round ${r + 1} ${t.name}: full ${us(full)} µs, resumed ${us(resumed)} µs (${resumed.reused} reused)`);
    }
  }
  const out = { load1: round(loadavg()[0], 2), rounds, connects, inFlight, workers: Number(o.workers) };
  for (const [name, x] of Object.entries(totals)) {
    out[name] = {
      fullUs: Math.round((x.full[0] * 1e6) / x.full[1]),
      resumedUs: Math.round((x.resumed[0] * 1e6) / x.resumed[1]),
      resumedShare: round(x.reused / x.resumed[1], 3),
      // With workers: the primary's CPU (client-id claims, relay) per connect, full and resumed pooled.
      ...(Number(o.workers) > 1 && name !== 'floor'
        ? { primaryUsPerConnect: Math.round((x.primary * 1e6) / (x.full[1] + x.resumed[1])) }
        : {}),
      ...(mem[name] != null ? { idleKiBPerConn: mem[name] } : {}),
    };
  }
  if (out.floor) {
    for (const name of Object.keys(totals)) {
      if (name === 'floor') continue;
      out[name].fullVsFloor = round(out[name].fullUs / out.floor.fullUs, 3);
      out[name].resumedVsFloor = round(out[name].resumedUs / out.floor.resumedUs, 3);
      if (mem[name] != null) out[name].idleVsFloor = round(mem[name] / mem.floor, 3);
    }
  }
  if (o.mqtt5) {
    for (const [name] of repos) {
      out[name].mqtt5FullConnectCpuVsMqtt311 = round(out[`${name}@5`].fullUs / out[name].fullUs, 3);
      out[name].mqtt5ResumedConnectCpuVsMqtt311 = round(out[`${name}@5`].resumedUs / out[name].resumedUs, 3);
    }
  }
  console.log(JSON.stringify(out));
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => {});
  await db.drop();
  rmSync(root, { recursive: true, force: true });
}
