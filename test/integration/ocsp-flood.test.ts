/**
 * An OCSP flood must not take the server down with it (issue: OCSP was unthrottled and signed
 * afresh each time, and /healthz went from ~1 ms to 120-170 ms under six clients). A real
 * `fleetgate serve`; flood clients in a worker thread (their TLS work stays off this thread)
 * from several loopback addresses, each request distinct (32 invented serials and a nonce: no
 * cache can answer it), for a few seconds; /healthz latency is compared with its idle latency as
 * a ratio with a generous bound, so a loaded machine cannot flake it but the old 100x fails it.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as pkijs from 'pkijs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestSync } from '../../server/src/ca/crypto.js';
import { encodeOid, seq, TAG, tlv } from '../../server/src/ca/der.js';
import { type ServeHandle, startServe, tempDir } from '../helpers/cli.js';

const FLOOD_CLIENTS = 6;
/** Requests each client keeps in flight. */
const FLOOD_DEPTH = 4;
const FLOOD_MS = 4_000;
const SAMPLES = 40;

/** OCSPRequest (RFC 6960 4.1.1) for `serials` under the issuer hashes, with an RFC 8954 nonce. */
function ocspRequestDer(nameHash: Uint8Array, keyHash: Uint8Array, serials: Uint8Array[]): Buffer {
  const sha1 = seq(encodeOid('1.3.14.3.2.26'), tlv(TAG.NULL));
  const requests = serials.map((s) =>
    seq(seq(sha1, tlv(TAG.OCTET_STRING, nameHash), tlv(TAG.OCTET_STRING, keyHash), tlv(TAG.INTEGER, s))),
  );
  const nonce = seq(encodeOid('1.3.6.1.5.5.7.48.1.2'), tlv(TAG.OCTET_STRING, tlv(TAG.OCTET_STRING, randomBytes(16))));
  return Buffer.from(seq(seq(seq(...requests), tlv(0xa2, seq(nonce)))));
}

/** One GET on a new connection, as a health probe (curl, a load balancer) makes it. */
function get(url: string, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request(url, { agent: false, ca }, (res) => {
      res.resume();
      res.on('end', () =>
        res.statusCode === 200 ? resolve(performance.now() - started) : reject(new Error(`${res.statusCode}`)),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

async function healthzP50(url: string, ca: string): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    samples.push(await get(url, ca));
    // Pacing, not synchronization: samples spread over the flood instead of one burst.
    await new Promise((r) => setTimeout(r, 15));
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

/** The flood, in a worker thread: each client POSTs its requests back to back over keep-alive. */
const FLOOD_WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const { Agent, request } = require('node:https');
const { url, ca, clients, depth, ms, bodies } = workerData;
const until = Date.now() + ms;
const stats = { ok: 0, tryLater: 0, other: 0, errors: 0 };
let announced = false;
let next = 0;
function post(agent) {
  return new Promise((resolve) => {
    const body = Buffer.from(bodies[next++ % bodies.length], 'base64');
    const req = request(url, { method: 'POST', agent, ca, headers: { 'content-type': 'application/ocsp-request' } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const b = Buffer.concat(chunks);
        if (res.statusCode !== 200) stats.other++;
        else if (b.length === 5 && b[4] === 3) stats.tryLater++;
        else if (b.length > 5) stats.ok++;
        else stats.other++;
        // Every connection has had an answer: tell the test the flood is running.
        if (!announced && stats.ok + stats.tryLater >= clients * depth) {
          announced = true;
          parentPort.postMessage({ running: true });
        }
        resolve();
      });
    });
    req.on('error', () => { stats.errors++; resolve(); });
    req.end(body);
  });
}
async function client(i) {
  const agent = new Agent({ keepAlive: true, maxSockets: depth, localAddress: '127.0.0.' + (2 + i) });
  const loop = async () => { while (Date.now() < until) await post(agent); };
  await Promise.all(Array.from({ length: depth }, loop));
  agent.destroy();
}
Promise.all(Array.from({ length: clients }, (_, i) => client(i))).then(() => parentPort.postMessage(stats));
`;

describe('OCSP flood', () => {
  let dataDir: string;
  let server: ServeHandle | undefined;
  let ca: string;
  let bodies: string[];

  beforeAll(async () => {
    dataDir = tempDir('fg-ocsp-flood-');
    server = await startServe({ FLEETGATE_DATA_DIR: dataDir });
    const issuingPem = readFileSync(path.join(dataDir, 'ca', 'issuing.crt'), 'utf8');
    ca = `${readFileSync(path.join(dataDir, 'ca', 'root.crt'), 'utf8')}\n${issuingPem}`;
    const der = Buffer.from(issuingPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const issuing = pkijs.Certificate.fromBER(new Uint8Array(der).buffer);
    const nameHash = digestSync('SHA-1', new Uint8Array(issuing.subject.toSchema().toBER(false)));
    const keyHash = digestSync('SHA-1', issuing.subjectPublicKeyInfo.subjectPublicKey.valueBlock.valueHexView);
    bodies = Array.from({ length: 2_000 }, () => {
      const serials = Array.from({ length: 32 }, () => {
        const s = randomBytes(16);
        s[0] = (s[0]! & 0x7f) | 0x01;
        return s;
      });
      return ocspRequestDer(nameHash, keyHash, serials).toString('base64');
    });
  }, 120_000);

  afterAll(async () => {
    await server?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps /healthz responsive while several clients flood /ocsp', async () => {
    const api = server!.apiUrl;
    {
      await get(`${api}/healthz`, ca); // JIT warm
      const idle = await healthzP50(`${api}/healthz`, ca);

      const worker = new Worker(FLOOD_WORKER, {
        eval: true,
        workerData: { url: `${api}/ocsp`, ca, clients: FLOOD_CLIENTS, depth: FLOOD_DEPTH, ms: FLOOD_MS, bodies },
      });
      // The worker says when every flood connection has been answered; its last message is the
      // stats (which also ends the wait if the flood never got going: the stats check then fails).
      let onRunning!: () => void;
      const running = new Promise<void>((resolve) => {
        onRunning = resolve;
      });
      const done = new Promise<Record<string, number>>((resolve, reject) => {
        worker.on('message', (m: Record<string, number> | { running: true }) => {
          onRunning();
          if (!('running' in m)) resolve(m);
        });
        worker.once('error', reject);
      });
      await running;
      const flooded = await healthzP50(`${api}/healthz`, ca);
      const stats = await done;
      await worker.terminate();

      console.log(
        `healthz p50 idle ${idle.toFixed(2)} ms, during the OCSP flood ${flooded.toFixed(2)} ms; flood answers ${JSON.stringify(stats)}`,
      );
      // The flood did run, and was answered (signed or tryLater), not dropped.
      expect(stats.ok! + stats.tryLater!).toBeGreaterThanOrEqual(FLOOD_CLIENTS);
      expect(stats.errors).toBe(0);
      // Generous, so a loaded 2-core machine cannot flake it: 5x idle plus 50 ms. The review
      // measured 1.2 ms idle against 120-173 ms under six clients (100x), which this catches.
      expect(flooded).toBeLessThan(idle * 5 + 50);
    }
  }, 60_000);
});
