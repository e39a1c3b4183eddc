/**
 * PostgreSQL stopped and started under a running `fleetgate serve` (a PostgreSQL server of the
 * test's own, never the machine's shared one): while it is down every API answer that needs it is
 * 503 STORE_UNAVAILABLE at once, with Retry-After (RFC 9110 10.2.3, RFC 7030 4.2.3), EST included;
 * the broker keeps admitting enrolled devices; nothing is printed as a Node process warning (what
 * goes wrong is a log line); and once the database is back, enrollment works again by itself,
 * with the token that was refused meanwhile still usable.
 */
import { readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCsr } from '../helpers/csr.js';
import { type Credential, connectOutcome, enrollDevices, type Fleet, startFleet } from '../helpers/device.js';
import { type PrivateCluster, privateClusterTools, startPrivateCluster } from '../helpers/pg-cluster.js';
import { until } from '../helpers/wait.js';

const tools = privateClusterTools();

interface Answer {
  status: number;
  /** Header lines as received. */
  lines: string[];
  body: string;
}

/** One request on a raw TLS socket (Connection: close); the header block as bytes. */
function exchange(fleet: Fleet, head: string, body = '', cred?: Credential): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: fleet.host,
      port: Number(new URL(fleet.apiUrl).port),
      ca: fleet.caPem,
      servername: 'localhost',
      ...(cred ? { cert: cred.certPem, key: cred.keyPem } : {}),
    });
    let raw = '';
    socket.setTimeout(60_000, () => socket.destroy(new Error(`no answer to ${head.split('\r\n')[0]}`)));
    socket.on('data', (d: Buffer) => {
      raw += d.toString('latin1');
    });
    socket.on('error', reject);
    socket.on('end', () => {
      const end = raw.indexOf('\r\n\r\n');
      const [statusLine = '', ...lines] = raw.slice(0, Math.max(end, 0)).split('\r\n');
      resolve({ status: Number(statusLine.split(' ')[1]), lines, body: raw.slice(end + 4) });
    });
    // write, not end: a half-closed request may be dropped before its answer (Node's HTTP server
    // aborts pending requests on the client's FIN); Connection: close makes the server end it.
    socket.once('secureConnect', () => {
      socket.write(
        `${head}\r\nHost: localhost\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    });
  });
}

const enrollHead = (id: string, token: string) =>
  `POST /.well-known/est/simpleenroll HTTP/1.1\r\nContent-Type: application/pkcs10\r\nAuthorization: Basic ${Buffer.from(`${id}:${token}`).toString('base64')}`;
const reenrollHead = 'POST /.well-known/est/simplereenroll HTTP/1.1\r\nContent-Type: application/pkcs10';

function expectUnavailable(a: Answer): void {
  expect(a.status, a.body).toBe(503);
  expect(a.lines).toContain('Retry-After: 10');
  expect(JSON.parse(a.body).code).toBe('STORE_UNAVAILABLE');
}

describe.runIf(tools)('PostgreSQL stopped and started under a running server', () => {
  let cluster: PrivateCluster | undefined;
  let fleet: Fleet | undefined;
  let device: Credential;
  let pendingToken: string;

  beforeAll(async () => {
    cluster = await startPrivateCluster();
    const url = cluster.url;
    fleet = await startFleet({ db: { url, drop: async () => undefined } });
    device = (await enrollDevices(fleet, ['outage-1']))['outage-1'] as Credential;
    const t = await fleet.api<{ tokens: { token: string }[] }>('POST', '/api/v1/tokens', { deviceIds: ['outage-2'] });
    pendingToken = t.json.tokens[0]?.token ?? '';
  }, 180_000);

  afterAll(async () => {
    try {
      if (fleet) {
        const stopped = fleet.server.stop();
        // Known, not fixed here: after an outage a postgres.js connection can outlive sql.end()
        // and keep the stopped server's process alive; stopping the database closes it.
        const hung = await Promise.race([stopped.then(() => false), sleep(15_000).then(() => true)]);
        if (hung) {
          await cluster?.destroy();
          await stopped;
        }
      }
    } finally {
      await cluster?.destroy();
      if (fleet) for (const d of [fleet.dataDir, fleet.work]) rmSync(d, { recursive: true, force: true });
    }
  });

  it('answers 503 STORE_UNAVAILABLE with Retry-After while down, keeps the broker admitting devices, and recovers by itself', async () => {
    const f = fleet as Fleet;
    const db = cluster as PrivateCluster;
    const csr = await makeCsr('outage-2');
    const renewCsr = await makeCsr('outage-1');
    const stderrBefore = f.server.stderr().length;

    await db.stop();
    // EST: enroll (Basic) and re-enroll (TLS client certificate), canonical Retry-After
    expectUnavailable(await exchange(f, enrollHead('outage-2', pendingToken), csr.base64));
    expectUnavailable(await exchange(f, reenrollHead, renewCsr.base64, device));
    // readiness and the operator API
    expectUnavailable(await exchange(f, 'GET /readyz HTTP/1.1'));
    const admin = readFileSync(`${f.dataDir}/operator.token`, 'utf8').trim();
    expectUnavailable(await exchange(f, `GET /api/v1/devices HTTP/1.1\r\nAuthorization: Bearer ${admin}`));
    // the broker admits an enrolled device from what it holds in memory
    expect(await connectOutcome(f, device)).toBe('accepted');
    // problems went to the log (JSON lines), not to Node's process warnings
    const during = f.server.stderr().slice(stderrBefore);
    expect(during).not.toMatch(/\(node:\d+\) \w*Warning/);
    for (const line of during.split('\n').filter(Boolean)) expect(() => JSON.parse(line), line).not.toThrow();

    await db.start();
    // enrollment works again without a restart, with the token refused during the outage
    const back = await until(
      () => exchange(f, enrollHead('outage-2', pendingToken), csr.base64),
      (a) => a.status !== 503,
      60_000,
    );
    expect(back.status, back.body).toBe(200);
    expect(back.lines).toContain('Content-Type: application/pkcs7-mime; smime-type=certs-only');
    expect(await connectOutcome(f, device)).toBe('accepted');
    expect(f.server.stderr().slice(stderrBefore)).not.toMatch(/\(node:\d+\) \w*Warning/);
  }, 240_000);
});
