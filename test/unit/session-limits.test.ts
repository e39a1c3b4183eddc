/**
 * session-limits.ts over aedes' real in-memory persistence: per-session caps on unacknowledged
 * outgoing messages and on QoS 2 messages awaiting PUBREL, counted from the persistence's calls.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { type LimitablePersistence, limitSessions } from '../../server/src/mqtt/session-limits.js';

const memory = createRequire(import.meta.url)('aedes-persistence') as () => LimitablePersistence & {
  outgoingStream(client: { id: string }): AsyncIterable<{ messageId?: number }>;
  outgoingUpdate(client: { id: string }, packet: object): Promise<unknown>;
};

const packet = (n: number) => ({
  cmd: 'publish',
  topic: 'devices/a/x',
  payload: Buffer.from(String(n)),
  qos: 1,
  retain: false,
  brokerId: 'b',
  brokerCounter: n,
});

async function queued(p: ReturnType<typeof memory>, id: string): Promise<number> {
  let n = 0;
  for await (const _ of p.outgoingStream({ id })) n++;
  return n;
}

function limited(maxQueued: number, maxIncoming = 3) {
  const hits: string[] = [];
  const p = limitSessions(memory(), { maxQueued, maxIncoming, onLimit: (id, limit) => hits.push(`${id}:${limit}`) });
  return { p: p as ReturnType<typeof memory>, hits };
}

describe('limitSessions', () => {
  it('keeps at most maxQueued messages per client id, others unaffected', async () => {
    const { p, hits } = limited(3);
    for (let i = 1; i <= 5; i++) await p.outgoingEnqueueCombi([{ clientId: 'a' }, { clientId: 'b' }], packet(i));
    await p.outgoingEnqueue({ clientId: 'a' }, packet(6));
    expect(await queued(p, 'a')).toBe(3);
    expect(await queued(p, 'b')).toBe(3);
    expect(hits.filter((h) => h === 'a:queued')).toHaveLength(3);
    expect(hits.filter((h) => h === 'b:queued')).toHaveLength(2);
  });

  it('makes room again when the client acknowledges (clear by message id)', async () => {
    const { p } = limited(2);
    await p.outgoingEnqueueCombi([{ clientId: 'a' }], packet(1));
    await p.outgoingEnqueueCombi([{ clientId: 'a' }], packet(2));
    // Sent: the persistence records the packet id it went out with.
    await p.outgoingUpdate({ id: 'a' }, { ...packet(1), messageId: 11 });
    await p.outgoingEnqueueCombi([{ clientId: 'a' }], packet(3));
    expect(await queued(p, 'a')).toBe(2);
    await p.outgoingClearMessageId({ id: 'a' }, { messageId: 11 });
    // An unknown id removes nothing and frees nothing.
    await p.outgoingClearMessageId({ id: 'a' }, { messageId: 999 });
    await p.outgoingEnqueueCombi([{ clientId: 'a' }], packet(4));
    await p.outgoingEnqueueCombi([{ clientId: 'a' }], packet(5));
    expect(await queued(p, 'a')).toBe(2);
  });

  it('refuses a QoS 2 message past maxIncoming awaiting PUBREL, across connections, until released', async () => {
    const { p, hits } = limited(10, 2);
    const client = { id: 'a' };
    await p.incomingStorePacket(client, { ...packet(1), messageId: 1 });
    await p.incomingStorePacket(client, { ...packet(2), messageId: 2 });
    // A retransmission of a stored id takes no new slot.
    await p.incomingStorePacket(client, { ...packet(2), messageId: 2 });
    await expect(p.incomingStorePacket(client, { ...packet(3), messageId: 3 })).rejects.toThrow(/PUBREL/);
    expect(hits).toEqual(['a:incoming']);
    await p.incomingDelPacket(client, { messageId: 1 });
    await p.incomingStorePacket(client, { ...packet(3), messageId: 3 });
    // A clean session starts empty.
    await p.cleanIncoming?.(client);
    await p.incomingStorePacket(client, { ...packet(4), messageId: 4 });
    await p.incomingStorePacket(client, { ...packet(5), messageId: 5 });
  });
});
