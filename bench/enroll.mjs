// Enrollment benchmark: EST simpleenroll end to end over HTTPS against real PostgreSQL, a new TLS
// connection per device as a factory line makes them. CSRs are made before the clock starts (a
// device makes its own). Reports enrollments/s and the server's CPU per enrollment (from /proc),
// and the floor: the same client load against a bare Node HTTPS server that answers at once
// (bench/floor-server.mjs), i.e. what this machine and this load generator allow any Node API.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import path from 'node:path';
import { createSecureContext } from 'node:tls';
import * as x509 from '@peculiar/x509';
import {
  cli,
  cpuSeconds,
  freshDatabase,
  log,
  round,
  serverCertificate,
  startFloorServer,
  startServe,
  tempDir,
} from './lib.mjs';
import { pool } from './mqtt-load.mjs';

x509.cryptoProvider.set(webcrypto);

async function makeCsr(id) {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, false, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${id}`, keys, signingAlgorithm: alg });
  return Buffer.from(csr.rawData).toString('base64');
}

function enrollOnce(apiUrl, secureContext, deviceId, token, csr) {
  return new Promise((resolve, reject) => {
    const req = request(
      `${apiUrl}/.well-known/est/simpleenroll`,
      {
        method: 'POST',
        // One prebuilt context (CA bundle parsed once), as a line station's client keeps it; a
        // new TLS connection (full handshake, no session reuse) per enrollment.
        secureContext,
        agent: false,
        headers: {
          'content-type': 'application/pkcs10',
          authorization: `Basic ${Buffer.from(`${deviceId}:${token}`).toString('base64')}`,
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
      },
    );
    req.on('error', reject);
    req.end(csr);
  });
}

/** Runs `request(i)` for every device, `concurrency` at a time; CPU of `pid` from /proc. */
async function load(pid, request, { count, concurrency }) {
  const cpu0 = cpuSeconds(pid);
  const t0 = process.hrtime.bigint();
  const { failed } = await pool(count, concurrency, request);
  return { failed, seconds: Number(process.hrtime.bigint() - t0) / 1e9, cpu: cpuSeconds(pid) - cpu0 };
}

export async function benchEnroll({ devices = 2000, concurrency = 32 } = {}) {
  const db = await freshDatabase();
  const dataDir = tempDir();
  const env = { FLEETGATE_DATA_DIR: dataDir, DATABASE_URL: db.url };
  const server = await startServe(env);
  try {
    const tokens = JSON.parse(
      await cli(['token', 'create', '--count', String(devices), '--prefix', 'bench-', '--json'], env),
    );
    const secureContext = createSecureContext({ ca: await cli(['ca', 'export'], env) });
    log(`enroll: making ${devices} CSRs`);
    const csrs = [];
    for (const t of tokens) csrs.push(await makeCsr(t.deviceId));
    log(`enroll: ${devices} enrollments, ${concurrency} at a time, new TLS connection each`);
    const size = { count: devices, concurrency };
    const run = await load(
      server.pid,
      (i) => enrollOnce(server.apiUrl, secureContext, tokens[i].deviceId, tokens[i].token, csrs[i]),
      size,
    );
    const ok = devices - run.failed;
    log('enroll: the same load against a bare Node HTTPS server (the floor)');
    const work = path.join(dataDir, 'floor');
    mkdirSync(work);
    const floorServer = await startFloorServer('https', {
      ...(await serverCertificate(dataDir, work, 'floor')),
      cafile: path.join(dataDir, 'ca', 'root.crt'),
    });
    let floor;
    try {
      const floorUrl = `https://127.0.0.1:${floorServer.port}`;
      floor = await load(
        floorServer.pid,
        (i) => enrollOnce(floorUrl, secureContext, tokens[i].deviceId, tokens[i].token, csrs[i]),
        size,
      );
    } finally {
      await floorServer.stop();
    }
    const result = {
      enrollmentsPerSec: round(ok / run.seconds, 1),
      enrollServerCpuMsPerEnroll: round((run.cpu * 1000) / ok, 3),
      // What one free core of server CPU would sustain, from the measured CPU per enrollment.
      enrollProjectedPerCore: round(ok / run.cpu, 1),
      enrollFailed: run.failed,
      // A Node HTTPS server that does no work at all, under the same client on the same machine.
      enrollFloorPerSec: round((devices - floor.failed) / floor.seconds, 1),
      enrollFloorServerCpuMsPerRequest: round((floor.cpu * 1000) / (devices - floor.failed), 3),
      enrollVsFloor: round(ok / run.seconds / ((devices - floor.failed) / floor.seconds), 3),
      // Server CPU per enrollment / the floor server's CPU per request, both in this run.
      enrollServerCpuVsFloor: round(run.cpu / ok / (floor.cpu / (devices - floor.failed)), 3),
    };
    log(`enroll: ${JSON.stringify(result)}`);
    return result;
  } finally {
    await server.stop();
    await db.drop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const quick = process.argv.includes('--quick');
  const result = await benchEnroll(quick ? { devices: 500 } : {});
  console.log(JSON.stringify(result));
}
