/**
 * The console's live stream on every node of a cluster (issue 17.4, docs/console.md): two
 * `fleetgate serve` processes on one PostgreSQL database (node B with a copy of node A's CA files).
 * A server-sent events client on node B sees a device enroll through node A's EST, come online on
 * node A's broker and go offline again, and a revocation made on node A: every one of them comes
 * from the store's change events (NOTIFY), not from the node where it happened.
 */
import { copyFileSync, cpSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/cli.js';
import { enrollDevices, type Fleet, mqttOptions, pgAvailable, startFleet } from '../helpers/device.js';
import { createTestDatabase, type TestDatabase } from '../helpers/pg.js';

interface Live {
  type: string;
  deviceId: string;
  online?: boolean;
  serial?: string;
}

const token = (fleet: Fleet) => readFileSync(path.join(fleet.dataDir, 'operator.token'), 'utf8').trim();

/** An SSE client: resolves `next(pred)` with the first event (past or future) matching it. */
function eventStream(fleet: Fleet): Promise<{ next(pred: (e: Live) => boolean): Promise<Live>; close(): void }> {
  return new Promise((resolveOpen, rejectOpen) => {
    const events: Live[] = [];
    const waiters: { pred: (e: Live) => boolean; resolve: (e: Live) => void }[] = [];
    const req = request(
      `${fleet.apiUrl}/api/v1/events`,
      {
        ca: fleet.caPem,
        headers: { authorization: `Bearer ${token(fleet)}`, accept: 'text/event-stream' },
        agent: false,
      },
      (res) => {
        if (res.statusCode !== 200) {
          rejectOpen(new Error(`events: HTTP ${res.statusCode}`));
          return;
        }
        let buf = '';
        let open = false;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          // The stream is subscribed once its first comment has arrived.
          if (!open && buf.startsWith(':')) {
            open = true;
            resolveOpen({
              next(pred) {
                const hit = events.find(pred);
                if (hit) return Promise.resolve(hit);
                // Bounded, so that a missing event fails the test and the stream still gets closed.
                return new Promise((resolve, reject) => {
                  const timer = setTimeout(
                    () => reject(new Error(`no such event within 20 s; got ${JSON.stringify(events)}`)),
                    20_000,
                  );
                  waiters.push({
                    pred,
                    resolve: (e) => {
                      clearTimeout(timer);
                      resolve(e);
                    },
                  });
                });
              },
              close: () => req.destroy(),
            });
          }
          for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            const data = /^data: (.*)$/m.exec(block)?.[1];
            if (!data) continue;
            const ev = JSON.parse(data) as Live;
            events.push(ev);
            for (const w of [...waiters]) {
              if (w.pred(ev)) {
                waiters.splice(waiters.indexOf(w), 1);
                w.resolve(ev);
              }
            }
          }
        });
      },
    );
    req.on('error', (e) => rejectOpen(e));
    req.end();
  });
}

describe('console live events across cluster nodes (one PostgreSQL, two serve processes)', () => {
  let skip = false;
  let db: TestDatabase;
  let a: Fleet;
  let b: Fleet;

  beforeAll(async () => {
    if (!(await pgAvailable())) {
      skip = true;
      return;
    }
    db = await createTestDatabase();
    const env = { FLEETGATE_WORKERS: '1', FLEETGATE_MQTT_PRESENCE_FLUSH: '200ms' };
    a = await startFleet({ db, env });
    const dir = tempDir('fg-node-');
    cpSync(path.join(a.dataDir, 'ca'), path.join(dir, 'ca'), { recursive: true });
    copyFileSync(path.join(a.dataDir, 'operator.token'), path.join(dir, 'operator.token'));
    b = await startFleet({ db, dataDir: dir, env });
  }, 120_000);

  afterAll(async () => {
    await b?.stop();
    await a?.stop();
    await db?.drop();
  });

  it('node B streams an enrollment, presence and a revocation that all happened on node A', async () => {
    if (skip) return;
    const stream = await eventStream(b);
    try {
      const deviceId = 'live-node-a';
      const cred = (await enrollDevices(a, [deviceId]))[deviceId];
      if (!cred) throw new Error('no credential');
      const enrolled = await stream.next((e) => e.type === 'enrolled' && e.deviceId === deviceId);
      expect(enrolled.serial).toBe(cred.serial);

      const client = mqtt.connect(mqttOptions(a, cred));
      await new Promise<void>((resolve, reject) => {
        client.once('connect', () => resolve());
        client.once('error', reject);
      });
      await stream.next((e) => e.type === 'presence' && e.deviceId === deviceId && e.online === true);
      await new Promise<void>((resolve) => client.end(false, {}, () => resolve()));
      await stream.next((e) => e.type === 'presence' && e.deviceId === deviceId && e.online === false);

      const r = await a.api('POST', `/api/v1/devices/${deviceId}/revoke`, { reason: 'superseded' });
      expect(r.status).toBe(200);
      await stream.next((e) => e.type === 'revoked' && e.deviceId === deviceId);
    } finally {
      stream.close();
    }
  }, 60_000);
});
