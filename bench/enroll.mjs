// Enrollment benchmark: EST simpleenroll end to end over HTTPS against real PostgreSQL, a new TLS
// connection per device as a factory line makes them. CSRs are made before the clock starts (a
// device makes its own). Reports enrollments/s and the server's CPU per enrollment (from /proc).
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { request } from 'node:https';
import * as x509 from '@peculiar/x509';
import { cli, cpuSeconds, freshDatabase, log, round, startServe, tempDir } from './lib.mjs';

x509.cryptoProvider.set(webcrypto);

async function makeCsr(id) {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, false, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${id}`, keys, signingAlgorithm: alg });
  return Buffer.from(csr.rawData).toString('base64');
}

function enrollOnce(apiUrl, ca, deviceId, token, csr) {
  return new Promise((resolve, reject) => {
    const req = request(
      `${apiUrl}/.well-known/est/simpleenroll`,
      {
        method: 'POST',
        ca,
        agent: false, // a new TLS connection per enrollment
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

export async function benchEnroll({ devices = 2000, concurrency = 32 } = {}) {
  const db = await freshDatabase();
  const dataDir = tempDir();
  const env = { FLEETGATE_DATA_DIR: dataDir, DATABASE_URL: db.url };
  const server = await startServe(env);
  try {
    const tokens = JSON.parse(
      await cli(['token', 'create', '--count', String(devices), '--prefix', 'bench-', '--json'], env),
    );
    const ca = await cli(['ca', 'export'], env);
    log(`enroll: making ${devices} CSRs`);
    const csrs = [];
    for (const t of tokens) csrs.push(await makeCsr(t.deviceId));
    log(`enroll: ${devices} enrollments, ${concurrency} at a time, new TLS connection each`);
    let next = 0;
    let failed = 0;
    const cpu0 = cpuSeconds(server.pid);
    const t0 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < tokens.length) {
          const i = next++;
          try {
            await enrollOnce(server.apiUrl, ca, tokens[i].deviceId, tokens[i].token, csrs[i]);
          } catch {
            failed++;
          }
        }
      }),
    );
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = cpuSeconds(server.pid) - cpu0;
    const ok = devices - failed;
    const result = {
      enrollmentsPerSec: round(ok / seconds, 1),
      enrollServerCpuMsPerEnroll: round((cpu * 1000) / ok, 3),
      // What one free core of server CPU would sustain, from the measured CPU per enrollment.
      enrollProjectedPerCore: round(ok / cpu, 1),
      enrollFailed: failed,
    };
    log(`enroll: ${JSON.stringify(result)}`);
    return result;
  } finally {
    await server.stop();
    await db.drop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const quick = process.argv.includes('--quick');
  const result = await benchEnroll(quick ? { devices: 500 } : {});
  console.log(JSON.stringify(result));
}
