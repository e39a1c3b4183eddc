// Console figures (issue 17): consoleDevicesPageMs, the first page of a filtered device search
// (id prefix + status + kind, 100 rows) with 100,000 devices on PostgreSQL, median over 30
// requests to a running `fleetgate serve` over one kept-alive HTTPS connection on loopback (the
// round trip: an upper bound of the server's time); consoleJsGzipKiB, the gzipped size of the
// JavaScript that index.html loads.
import { readFileSync } from 'node:fs';
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

export async function benchConsole({ quick = false } = {}) {
  const devices = quick ? 20_000 : 100_000;
  const db = await freshDatabase();
  const dataDir = tempDir();
  const server = await startServe({ FLEETGATE_DATA_DIR: dataDir, DATABASE_URL: db.url, FLEETGATE_WORKERS: '1' });
  try {
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    // Rows straight into the devices table (schema made by serve): enrolling 100,000 devices
    // through EST is the enroll bench's job; this one measures the search.
    await sql.unsafe(`INSERT INTO devices (id, kind, status, online)
      SELECT 'bench-' || lpad(i::text, 6, '0'), 'device', CASE WHEN i % 10 = 0 THEN 'revoked' ELSE 'active' END, i % 3 = 0
      FROM generate_series(1, ${devices}) AS i`);
    await sql.unsafe('ANALYZE devices');
    await sql.end();
    const token = readFileSync(path.join(dataDir, 'operator.token'), 'utf8').trim();
    const ca = ['root.crt', 'issuing.crt'].map((f) => readFileSync(path.join(dataDir, 'ca', f), 'utf8')).join('\n');
    const url = `${server.apiUrl}/api/v1/devices?prefix=bench-04&status=active&kind=device&limit=100`;
    // One kept-alive connection, like a browser's: the figure is the request, not TLS set-up.
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca });
    const times = [];
    for (let i = 0; i < 33; i++) {
      const r = await get(url, token, agent);
      if (r.status !== 200) throw new Error(`devices page: ${r.status} ${r.body}`);
      if (i >= 3) times.push(r.ms); // the first three warm the plan cache and the TLS session
    }
    agent.destroy();
    times.sort((a, b) => a - b);
    const ms = round(percentile(times, 50), 1);
    log(`console: first filtered devices page of ${devices} devices, median ${ms} ms`);
    return { consoleDevicesPageMs: ms, consoleDevices: devices, consoleJsGzipKiB: consoleJsGzipKiB() };
  } finally {
    await server.stop();
    await db.drop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await benchConsole({ quick: process.argv.includes('--quick') })));
}
