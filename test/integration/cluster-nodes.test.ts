/**
 * A multi-node cluster on this machine: three `fleetgate serve` processes on their own ports and
 * data dirs, one PostgreSQL database, one Redis (REDIS_URL, a key prefix of this run), the same
 * CA files (nodes B and C get a copy of node A's ca/ directory; C also runs two broker workers).
 * Publish on one node, receive on another (mqemitter-redis); retained messages through
 * aedes-persistence-redis; revoke through node A's API, disconnect on B and C (PostgreSQL
 * LISTEN/NOTIFY); a TLS ticket from node A resumes on B and C (ticket keys from the database);
 * the same client id taken over across nodes.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, cpSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/cli.js';
import {
  type Credential,
  connectWithSession,
  createService,
  enrollDevices,
  type Fleet,
  metricsText,
  metricValue,
  pgAvailable,
  revokeDevice,
  type SessionConn,
  startFleet,
} from '../helpers/device.js';
import { createTestDatabase, type TestDatabase } from '../helpers/pg.js';
import { deleteRedisPrefix, redisAvailable, TEST_REDIS_URL } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

/** How long a message that must not arrive gets to show up (absence checks only). */
const ABSENCE_WINDOW_MS = 300;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

describe('multi-node cluster (PostgreSQL + Redis, three nodes)', () => {
  let skip = false;
  let db: TestDatabase;
  const nodes: Fleet[] = [];
  const run = randomBytes(3).toString('hex'); // unique ids: Redis pub/sub channels are server-wide
  const prefix = `fgtest-${run}:`;
  const id = (name: string) => `${name}-${run}`;
  let devs: Record<string, Credential>;
  let svc: Credential;
  const dev = (name: string) => devs[id(name)] as Credential;
  const revokeIds = Array.from({ length: 8 }, (_, i) => `nrv${i}`);

  beforeAll(async () => {
    if (!(await pgAvailable()) || !(await redisAvailable())) {
      skip = true;
      return;
    }
    db = await createTestDatabase();
    const env = { REDIS_URL: TEST_REDIS_URL, FLEETGATE_REDIS_KEY_PREFIX: prefix, FLEETGATE_MQTT_PRESENCE_FLUSH: '1s' };
    const a = await startFleet({ db, env });
    nodes.push(a);
    // Nodes B and C: own data dirs holding a copy of A's CA files (and the operator token, so
    // the CLI and this test can use their APIs too); the database already knows that CA.
    for (const workers of ['1', '2']) {
      const dir = tempDir('fg-node-');
      cpSync(path.join(a.dataDir, 'ca'), path.join(dir, 'ca'), { recursive: true });
      copyFileSync(path.join(a.dataDir, 'operator.token'), path.join(dir, 'operator.token'));
      nodes.push(await startFleet({ db, dataDir: dir, env: { ...env, FLEETGATE_WORKERS: workers } }));
    }
    devs = await enrollDevices(a, ['pub', 'ret', 'res', 'take', ...revokeIds].map(id));
    svc = await createService(a, `ingest${run}`);
  }, 180_000);

  afterAll(async () => {
    for (const n of nodes) await n.stop();
    await db?.drop();
    if (!skip) await deleteRedisPrefix(prefix);
  });

  it('runs every node on the same CA, with Redis routing in the banner', () => {
    if (skip) return;
    const [a, b, c] = nodes as [Fleet, Fleet, Fleet];
    expect(new Set(nodes.map((n) => n.caPem)).size).toBe(1);
    expect(new Set(nodes.map((n) => n.mqttPort)).size).toBe(3);
    for (const n of [a, b]) expect(n.server.banner).toMatch(/MQTT workers\s+1, messages via Redis redis:\/\//);
    expect(c.server.banner).toMatch(/MQTT workers\s+2, messages via Redis redis:\/\//);
  });

  it('delivers a publish on node A to subscribers on nodes B and C', async () => {
    if (skip) return;
    const [a, b, c] = nodes as [Fleet, Fleet, Fleet];
    const subs = await Promise.all(
      [b, c].map(async (n, i) => {
        const s = await connectWithSession(n, svc, { clientId: `ingest${run}-${i}` });
        await s.client.subscribeAsync('devices/+/telemetry');
        return s;
      }),
    );
    const payloads = subs.map((s) => {
      const seen: string[] = [];
      s.client.on('message', (_t, p) => seen.push(p.toString()));
      return seen;
    });
    const pub = await connectWithSession(a, dev('pub'));
    const topic = `devices/${id('pub')}/telemetry`;
    // The subscriptions reach node A through Redis: it is ready when a probe from A arrives on both.
    await waitFor(
      'a probe published on node A to reach the subscribers on B and C',
      async () => {
        await pub.client.publishAsync(topic, 'probe', { qos: 1 });
        return payloads.every((seen) => seen.includes('probe'));
      },
      10_000,
    );
    await pub.client.publishAsync(topic, 'hello', { qos: 1 });
    await waitFor('hello on B and C', () => payloads.every((seen) => seen.includes('hello')), 10_000).catch(
      () => undefined,
    );
    expect(payloads.map((seen) => seen.filter((p) => p !== 'probe'))).toEqual([['hello'], ['hello']]);
    await Promise.all([pub, ...subs].map((x) => x.client.endAsync()));
  });

  it('keeps retained messages in Redis for subscribers on any node, and removes them at revocation', async () => {
    if (skip) return;
    const [a, b, c] = nodes as [Fleet, Fleet, Fleet];
    const pub = await connectWithSession(a, dev('ret'));
    await pub.client.publishAsync(`devices/${id('ret')}/state`, 'on', { qos: 1, retain: true });
    await pub.client.endAsync();
    // A control retained message of a device that stays.
    const keeper = await connectWithSession(b, dev('pub'));
    await keeper.client.publishAsync(`devices/${id('pub')}/state`, 'kept', { qos: 1, retain: true });
    await keeper.client.endAsync();
    const wanted = [`devices/${id('pub')}/state`, `devices/${id('ret')}/state`];
    /**
     * Retained topics of this run a new subscriber on `n` gets: waits until every `expected` one
     * has arrived. When a topic of this run must NOT arrive, it then gets a short window to show
     * up: that absence is what the caller checks (the persistence streams matches in no promised
     * order, so the control message arriving first proves nothing about the other).
     */
    const retainedSeen = async (n: Fleet, clientId: string, expected: string[]): Promise<string[]> => {
      const s = await connectWithSession(n, svc, { clientId });
      const topics: string[] = [];
      s.client.on('message', (t) => {
        if (wanted.includes(t)) topics.push(t);
      });
      await s.client.subscribeAsync('devices/+/state');
      await waitFor(`retained ${expected.join(', ')}`, () => expected.every((t) => topics.includes(t)), 10_000).catch(
        () => undefined,
      );
      if (wanted.some((t) => !expected.includes(t))) await sleep(ABSENCE_WINDOW_MS);
      await s.client.endAsync();
      return topics.sort();
    };
    for (const [i, n] of [b, c].entries()) {
      expect(await retainedSeen(n, `ingest${run}-r${i}`, wanted)).toEqual(wanted);
    }
    await revokeDevice(a, id('ret'));
    const kept = [wanted[0] as string];
    for (const [i, n] of [a, b, c, c].entries()) {
      expect(await retainedSeen(n, `ingest${run}-x${i}`, kept)).toEqual(kept);
    }
  });

  it('resumes a TLS ticket from node A on nodes B and C', async () => {
    if (skip) return;
    const [a, b, c] = nodes as [Fleet, Fleet, Fleet];
    const first = await connectWithSession(a, dev('res'));
    const ticket = first.session();
    expect(ticket).toBeDefined();
    await first.client.endAsync();
    for (const n of [b, c, c]) {
      const r = await connectWithSession(n, dev('res'), { session: ticket });
      expect(r.reused).toBe(true);
      await r.client.endAsync();
    }
  });

  it('lets the same client id take over across nodes', async () => {
    if (skip) return;
    const [a, b, c] = nodes as [Fleet, Fleet, Fleet];
    const first = await connectWithSession(a, dev('take'));
    const closed = new Promise<void>((r) => first.client.stream.once('close', () => r()));
    const second = await connectWithSession(b, dev('take'));
    await Promise.race([closed, sleep(10_000).then(() => Promise.reject(new Error('node A kept the old connection')))]);
    first.client.end(true);
    const closed2 = new Promise<void>((r) => second.client.stream.once('close', () => r()));
    const third = await connectWithSession(c, dev('take'));
    await Promise.race([
      closed2,
      sleep(10_000).then(() => Promise.reject(new Error('node B kept the old connection'))),
    ]);
    second.client.end(true);
    expect(third.client.connected).toBe(true);
    expect(metricValue(await metricsText(a), 'fleetgate_mqtt_takeovers_total')).toBe(1);
    expect(metricValue(await metricsText(b), 'fleetgate_mqtt_takeovers_total')).toBe(1);
    await third.client.endAsync();
  });

  it("closes a device on node B or C when it is revoked through node A's API", async () => {
    if (skip) return;
    const [a, b, c] = nodes as [Fleet, Fleet, Fleet];
    const conns = await Promise.all(revokeIds.map((name, i) => connectWithSession(i % 2 === 0 ? b : c, dev(name))));
    const latencies: number[] = [];
    for (const [i, name] of revokeIds.entries()) {
      const conn = conns[i] as SessionConn;
      const closed = new Promise<number>((r) => conn.client.stream.once('close', () => r(performance.now())));
      const t0 = performance.now();
      await revokeDevice(a, id(name));
      latencies.push((await Promise.race([closed, sleep(10_000).then(() => Number.NaN)])) - t0);
      conn.client.end(true);
    }
    const sorted = [...latencies].sort((x, y) => x - y);
    console.log(
      `revoke on node A -> disconnect on B/C (${latencies.length} devices, ms from the API call): ` +
        `p50 ${percentile(sorted, 50).toFixed(1)}, p99 ${percentile(sorted, 99).toFixed(1)}, all ${latencies.map((l) => l.toFixed(0)).join(' ')}`,
    );
    for (const l of latencies) expect(Number.isFinite(l)).toBe(true);
    // Refused afterwards on every node.
    for (const n of [a, b, c]) await expect(connectWithSession(n, dev(revokeIds[0] as string))).rejects.toThrow();
  });
});
