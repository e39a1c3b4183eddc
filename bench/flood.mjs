// Flood: `fleetgate serve` (default workers and limits, PostgreSQL) under publishers that write
// QoS 0 PUBLISH packets as fast as their TLS sockets take them, for 5 minutes (--quick: 30 s),
// while calm devices publish QoS 1 telemetry every 100 ms to a subscribed service. Reports
// crashes (any process of the broker's tree that vanished), what the flooders wrote, what the
// calm devices got through (delivered share, latency p50/p99), peak RSS, and whether a new
// device can connect at the end. The protections under test: the per-connection publish rate
// limit (TCP backpressure) and the link's bounded reads (no mqemitter stack overflow).
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { crashWatch, enrollDevices } from './broker.mjs';
import {
  cli,
  freshDatabase,
  log as logLine,
  percentile,
  round,
  startServe,
  tempDir,
  treeCpuSeconds,
  treeRssKiB,
} from './lib.mjs';
import { identityContext, mqttConnect, packetReader, publishPacket, subscribePacket } from './mqtt-load.mjs';

const startedAt = performance.now();
const log = (line) => logLine(`[${((performance.now() - startedAt) / 1000).toFixed(1).padStart(5)} s] flood: ${line}`);

/** Resolves on 'drain' or after `ms` (a throttled socket may stay full), leaving no listener. */
function drained(socket, ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    socket.once('drain', done);
    socket.once('close', done);
  });
}

export async function benchFlood({ seconds = 300, flooders = 4, calm = 8 } = {}) {
  const db = await freshDatabase();
  const dataDir = tempDir();
  const env = { FLEETGATE_DATA_DIR: dataDir, DATABASE_URL: db.url };
  let server;
  try {
    server = await startServe(env);
    const port = Number(new URL(server.mqttUrl).port);
    const caPem = await cli(['ca', 'export'], env);
    const tokens = JSON.parse(
      await cli(['token', 'create', '--count', String(flooders + calm + 1), '--prefix', 'flood-', '--json'], env),
    );
    const devices = await enrollDevices(server.apiUrl, caPem, tokens);
    for (const d of devices) d.ctx = identityContext(d, caPem);
    await cli(['service', 'create', 'flood-sink', '--out', dataDir], env);
    const sinkCtx = identityContext(
      {
        keyPem: readFileSync(`${dataDir}/flood-sink.key`, 'utf8'),
        certPem: readFileSync(`${dataDir}/flood-sink.crt`, 'utf8'),
      },
      caPem,
    );

    // Crash watch over the whole tree (launcher's child, workers).
    const crashWatcher = crashWatch(server);
    let peakRssKiB = 0;
    const rssWatch = setInterval(() => {
      peakRssKiB = Math.max(peakRssKiB, treeRssKiB(server.pid));
    }, 500);

    // The sink: subscribed to the calm devices' telemetry; records arrival times.
    const sentAt = new Map();
    const latencies = [];
    const sink = await mqttConnect({ port, secureContext: sinkCtx, clientId: 'flood-sink' });
    sink.socket.on(
      'data',
      packetReader((type, p) => {
        if (type !== 3) return;
        const tlen = p.readUInt16BE(2);
        const key =
          p.subarray(4, 4 + tlen).toString() +
          p
            .subarray(4 + tlen)
            .toString()
            .slice(-12);
        const t0 = sentAt.get(key);
        if (t0 !== undefined) {
          latencies.push(performance.now() - t0);
          sentAt.delete(key);
        }
      }),
    );
    sink.socket.write(subscribePacket('devices/+/telemetry'));
    await sleep(300);

    const cpu0 = treeCpuSeconds(server.pid);
    const deadline = performance.now() + seconds * 1000;
    let floodWritten = 0;
    let floodCut = 0;
    const floodDevs = devices.slice(0, flooders);
    const calmDevs = devices.slice(flooders, flooders + calm);
    const spare = devices[flooders + calm];
    log(`${flooders} flooders, ${calm} calm devices, ${seconds} s`);

    const floodLoops = floodDevs.map(async (d) => {
      while (performance.now() < deadline) {
        let c;
        try {
          c = await mqttConnect({ port, secureContext: d.ctx, clientId: d.id });
        } catch {
          await sleep(500);
          continue;
        }
        const batch = Buffer.concat(
          Array.from({ length: 50 }, () => publishPacket(`devices/${d.id}/telemetry`, Buffer.alloc(64, 0x66))),
        );
        while (performance.now() < deadline && !c.socket.destroyed) {
          floodWritten += 50;
          if (!c.socket.write(batch)) await drained(c.socket, 1000);
        }
        if (c.socket.destroyed) floodCut++;
        c.socket.destroy();
      }
    });

    let calmSent = 0;
    const calmLoops = calmDevs.map(async (d) => {
      let packetId = 1;
      let c = null;
      while (performance.now() < deadline) {
        try {
          c ??= await mqttConnect({ port, secureContext: d.ctx, clientId: d.id });
          const stamp = String(calmSent).padStart(12, '0');
          const topic = `devices/${d.id}/telemetry`;
          sentAt.set(topic + stamp, performance.now());
          calmSent++;
          c.socket.write(publishPacket(topic, Buffer.from(stamp), packetId));
          packetId = (packetId % 65535) + 1;
        } catch {
          c = null;
        }
        if (c?.socket.destroyed) c = null;
        await sleep(100);
      }
      c?.socket.destroy();
    });

    const progress = setInterval(
      () =>
        log(
          `flood written ${floodWritten}, calm ${latencies.length}/${calmSent} delivered, RSS ${Math.round(peakRssKiB / 1024)} MiB peak, crashes ${crashWatcher.check()}`,
        ),
      Math.min(30_000, (seconds * 1000) / 4),
    );
    await Promise.all([...floodLoops, ...calmLoops]);
    clearInterval(progress);
    await sleep(2000); // the last calm messages
    const cpu = treeCpuSeconds(server.pid) - cpu0;
    // Still serving: a new device connects.
    let connectsAfter = false;
    try {
      const c = await mqttConnect({ port, secureContext: spare.ctx, clientId: spare.id, timeoutMs: 30_000 });
      c.socket.destroy();
      connectsAfter = true;
    } catch {}
    clearInterval(rssWatch);
    let crashes = crashWatcher.check();
    crashWatcher.stop();
    sink.socket.destroy();
    if (server.exited()) crashes++;
    latencies.sort((a, b) => a - b);
    const result = {
      floodSeconds: seconds,
      floodCrashes: crashes,
      floodPacketsWritten: floodWritten,
      floodFlooderConnectionsCut: floodCut,
      floodCalmDelivered: round(latencies.length / Math.max(1, calmSent), 4),
      floodCalmLatencyP50Ms: round(percentile(latencies, 50), 1),
      floodCalmLatencyP99Ms: round(percentile(latencies, 99), 1),
      floodPeakRssMiB: round(peakRssKiB / 1024, 0),
      floodBrokerCpuCores: round(cpu / seconds, 2),
      floodNewDeviceConnects: connectsAfter,
    };
    log(JSON.stringify(result));
    return result;
  } finally {
    await server?.stop();
    await db.drop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const quick = process.argv.includes('--quick');
  console.log(JSON.stringify(await benchFlood(quick ? { seconds: 30 } : {})));
}
