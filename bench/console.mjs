// Console figures (issue 17): consoleDevicesPageMs, the first page of a filtered device search
// with 100,000 devices (each with a certificate) on PostgreSQL: the slowest median of the
// searches below (id prefix + status + kind; the same with a key type; with a key type sorted by
// last seen; by certificate expiry), each the median over 30 requests to a running
// `fleetgate serve` over one kept-alive HTTPS connection on loopback (the round trip: an upper
// bound of the server's time); consoleJsGzipKiB, the gzipped size of the JavaScript that
// index.html loads.

import { webcrypto } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:https';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import postgres from 'postgres';
import { freshDatabase, log, percentile, REPO, round, startServe, tempDir } from './lib.mjs';

export function consoleJsGzipKiB() {
  const dist = path.join(REPO, 'console/dist');
  const html = readFileSync(path.join(dist, 'index.html'), 'utf8');
  let bytes = 0;
  for (const m of html.matchAll(/<script[^>]*src="\/console\/([^"]+)"/g)) {
    bytes += gzipSync(readFileSync(path.join(dist, m[1])), { level: 9 }).length;
  }
  return round(bytes / 1024, 1);
}

function get(url, token, agent) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const req = request(url, { headers: { authorization: `Bearer ${token}` }, agent }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () =>
        resolve({ ms: Number(process.hrtime.bigint() - started) / 1e6, status: res.statusCode, body }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

/** A real self-signed certificate's DER with a key of this WebCrypto algorithm (one per key type). */
async function certificateDer(alg) {
  const x509 = await import('../server/dist/ca/x509.js');
  const keys = await webcrypto.subtle.generateKey(alg, false, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=bench',
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys,
    signingAlgorithm: alg,
  });
  return Buffer.from(cert.rawData);
}

/** The searches timed; consoleDevicesPageMs is the slowest median. */
const SEARCHES = {
  prefixStatusKind: 'prefix=bench-01&status=active&kind=device&limit=100',
  keyType: 'prefix=bench-01&status=active&kind=device&keyType=ed25519&limit=100',
  keyTypeByLastSeen: 'status=active&kind=device&keyType=ec-p256&sort=-lastSeenAt&limit=100',
  byCertExpiry: 'kind=device&sort=certNotAfter&limit=100',
};

export async function benchConsole({ quick = false } = {}) {
  const devices = quick ? 20_000 : 100_000;
  const db = await freshDatabase();
  const dataDir = tempDir();
  const server = await startServe({ FLEETGATE_DATA_DIR: dataDir, DATABASE_URL: db.url, FLEETGATE_WORKERS: '1' });
  try {
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    // Rows straight into the devices table (schema made by serve): enrolling 100,000 devices
    // through EST is the enroll bench's job; this one measures the search.
    await sql.unsafe(`INSERT INTO devices (id, kind, status, online, last_seen_at)
      SELECT 'bench-' || lpad(i::text, 6, '0'), 'device', CASE WHEN i % 10 = 0 THEN 'revoked' ELSE 'active' END, i % 3 = 0,
        CASE WHEN i % 7 = 0 THEN NULL ELSE now() - (i % 5000) * interval '1 minute' END
      FROM generate_series(1, ${devices}) AS i`);
    // One certificate per device, of real certificates' DER (the store reads the key type from
    // it): 80% P-256, 15% Ed25519, 5% RSA-2048, expiring over the next year. The trigger of
    // migration 6 gives every device its current certificate's key type and expiry.
    const ders = [
      await certificateDer({ name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }),
      await certificateDer({ name: 'Ed25519' }),
      await certificateDer({
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      }),
    ];
    await sql.unsafe(
      `INSERT INTO certificates (serial, device_id, subject, not_before, not_after, key_fingerprint, der, origin_issued_at)
      SELECT lpad(to_hex(i), 16, '0'), 'bench-' || lpad(i::text, 6, '0'), 'CN=bench-' || lpad(i::text, 6, '0'),
        now() - interval '1 day', now() + (i % 365 + 1) * interval '1 day', md5(i::text),
        CASE WHEN i % 20 < 16 THEN $1::bytea WHEN i % 20 < 19 THEN $2::bytea ELSE $3::bytea END, now()
      FROM generate_series(1, ${devices}) AS i`,
      ders,
    );
    await sql.unsafe('ANALYZE devices');
    await sql.unsafe('ANALYZE certificates');
    await sql.end();
    const token = readFileSync(path.join(dataDir, 'operator.token'), 'utf8').trim();
    const ca = ['root.crt', 'issuing.crt'].map((f) => readFileSync(path.join(dataDir, 'ca', f), 'utf8')).join('\n');
    // One kept-alive connection, like a browser's: the figure is the request, not TLS set-up.
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca });
    const medians = {};
    for (const [name, search] of Object.entries(SEARCHES)) {
      const times = [];
      for (let i = 0; i < 33; i++) {
        const r = await get(`${server.apiUrl}/api/v1/devices?${search}`, token, agent);
        if (r.status !== 200) throw new Error(`devices page ${name}: ${r.status} ${r.body}`);
        if (i === 0 && JSON.parse(r.body).devices.length === 0) throw new Error(`devices page ${name}: empty`);
        if (i >= 3) times.push(r.ms); // the first three warm the plan cache and the TLS session
      }
      times.sort((a, b) => a - b);
      medians[name] = round(percentile(times, 50), 1);
      log(`console: first devices page (${search}) of ${devices} devices, median ${medians[name]} ms`);
    }
    agent.destroy();
    return {
      consoleDevicesPageMs: Math.max(...Object.values(medians)),
      consoleDevicesPageMsBySearch: medians,
      consoleDevices: devices,
      consoleJsGzipKiB: consoleJsGzipKiB(),
    };
  } finally {
    await server.stop();
    await db.drop();
    // The data dir holds the CA keys and the admin token of a throw-away server: never left behind.
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await benchConsole({ quick: process.argv.includes('--quick') })));
}
