/**
 * What revocation does to a device's retained messages: they go with it. A device may only
 * publish under `devices/<id>/#` (acl.ts), so that subtree holds every retained message it can
 * have left; once the device is revoked, a subscriber arriving later must not be served a state
 * the broker no longer vouches for (MQTT 3.1.1 3.3.1.3 lets a retained message be removed by a
 * zero-byte retained PUBLISH; the broker does the same in its persistence directly).
 *
 * Every broker process runs this on the store's `device-revoked` event: alone, each cluster worker
 * (whose in-memory persistence holds its own copy of every retained message), and each node
 * sharing Redis (where the deletions are idempotent). Retained messages under the subtree that a
 * service published (commands for that device) go too: nobody can receive them any more.
 */

/** The part of aedes' persistence (promise form, aedes-persistence 10+) used here. */
export interface RetainedStore {
  createRetainedStreamCombi(patterns: string[]): AsyncIterable<{ topic: string }>;
  storeRetained(packet: {
    topic: string;
    payload: Buffer;
    qos: number;
    retain: boolean;
    cmd: 'publish';
  }): Promise<void>;
}

const EMPTY = Buffer.alloc(0);

/** Removes every retained message on `devices/<deviceId>` and below; resolves with their count. */
export async function clearRetainedOf(persistence: RetainedStore, deviceId: string): Promise<number> {
  // Device ids and service names never hold a wildcard or '/' (DEVICE_ID_PATTERN): refuse rather
  // than widen the subtree if one ever did.
  if (/[/+#\0]/.test(deviceId) || deviceId.length === 0) return 0;
  const base = `devices/${deviceId}`;
  // '#' covers the parent level in MQTT [MQTT-4.7.1-2] but not in every persistence's matcher: ask for both.
  const topics = new Set<string>();
  for await (const p of persistence.createRetainedStreamCombi([base, `${base}/#`])) topics.add(p.topic);
  for (const topic of topics) {
    await persistence.storeRetained({ cmd: 'publish', topic, payload: EMPTY, qos: 0, retain: true });
  }
  return topics.size;
}
