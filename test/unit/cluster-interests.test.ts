import type { Message } from 'mqemitter';
import { describe, expect, it, vi } from 'vitest';
import { WorkerInterests } from '../../server/src/cluster/interests.js';
import { relayWorker, tick } from '../helpers/relay.js';

const noop = (_m: Message, done: () => void) => done();

describe('WorkerInterests (the primary: which worker has subscribers for which topics)', () => {
  it('matches topics as mqemitter does, per worker, and asks for an acknowledgement of additions only', () => {
    const interests = new WorkerInterests<string>();
    expect(interests.apply('A', ['+devices/+/telemetry', '+fleet/broadcast/#'])).toBe(true);
    expect(interests.apply('B', ['+devices/d1/commands/#'])).toBe(true);
    expect(interests.wants('A', 'devices/d1/telemetry')).toBe(true);
    expect(interests.wants('A', 'devices//telemetry')).toBe(true); // empty levels, as the workers' emitter
    expect(interests.wants('A', 'fleet/broadcast')).toBe(true);
    expect(interests.wants('A', 'devices/d1/commands/x')).toBe(false);
    expect(interests.wants('B', 'devices/d1/commands/x')).toBe(true);
    expect(interests.wants('B', 'devices/d2/commands/x')).toBe(false);
    expect(interests.wants('C', 'devices/d1/telemetry')).toBe(false);
    // In order: removed, added again, removed again.
    expect(interests.apply('A', ['-fleet/broadcast/#', '+fleet/broadcast/#', '-fleet/broadcast/#'])).toBe(true);
    expect(interests.wants('A', 'fleet/broadcast/x')).toBe(false);
    expect(interests.apply('A', ['-devices/+/telemetry'])).toBe(false);
    expect(interests.wants('A', 'devices/d1/telemetry')).toBe(false);
    expect(interests.apply('A', [])).toBe(false);
    interests.forget('B');
    expect(interests.wants('B', 'devices/d1/commands/x')).toBe(false);
  });
});

describe('the IPC emitter (a worker): topic filters and SUBACK timing', () => {
  it('answers a subscription to a new filter only once the primary has acknowledged it', async () => {
    const { sent, relay, mq } = relayWorker();
    const ready: string[] = [];
    mq.on('devices/+/telemetry', noop, () => ready.push('s1'));
    mq.on('devices/+/telemetry', noop, () => ready.push('s2')); // same filter, same batch
    await tick();
    expect(sent.map((b) => b.interest)).toEqual([['+devices/+/telemetry']]);
    mq.on('devices/+/telemetry', noop, () => ready.push('s3')); // added, not yet acknowledged
    await tick();
    expect(ready).toEqual([]);
    relay.interestAcked();
    expect(ready).toEqual(['s1', 's2', 's3']);
    mq.on('devices/+/telemetry', noop, () => ready.push('s4')); // in place: at once
    await tick();
    expect(ready).toEqual(['s1', 's2', 's3', 's4']);
    expect(sent).toHaveLength(1); // a filter already reported is not reported again
  });

  it('reports a filter removed with its last subscriber, and a filter added again in order', async () => {
    // Fake timeouts (setImmediate stays real: the emitter flushes batches in it) so the delayed
    // flush (RELEASE_DELAY_MS) runs when the test says, not after a real second.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      await removedAndAddedAgain();
    } finally {
      vi.useRealTimers();
    }
  });

  async function removedAndAddedAgain(): Promise<void> {
    const { sent, relay, mq } = relayWorker();
    mq.on('a/#', noop);
    mq.on('a/#', noop);
    await tick();
    relay.interestAcked();
    mq.removeListener('a/#', noop);
    // A removal rides the next batch or leaves within a second; this filter still has a subscriber,
    // so nothing leaves even once that second has passed.
    vi.advanceTimersByTime(1_100);
    await tick();
    expect(sent).toHaveLength(1);
    mq.removeListener('a/#', noop);
    mq.removeListener('a/#', noop); // one removal too many: ignored
    const ready: string[] = [];
    mq.on('a/#', noop, () => ready.push('again')); // back in the same batch
    await tick();
    expect(sent[1]?.interest).toEqual(['-a/#', '+a/#']);
    expect(ready).toEqual([]);
    relay.interestAcked();
    expect(ready).toEqual(['again']);
  }

  it('acknowledges batches oldest first', async () => {
    const { relay, mq } = relayWorker();
    const ready: string[] = [];
    mq.on('x', noop, () => ready.push('x'));
    await tick();
    mq.on('y', noop, () => ready.push('y'));
    mq.on('x', noop, () => ready.push('x2')); // waits on the first batch
    await tick();
    relay.interestAcked();
    expect(ready).toEqual(['x', 'x2']);
    relay.interestAcked();
    expect(ready).toEqual(['x', 'x2', 'y']);
    relay.interestAcked(); // nothing pending: no effect
    expect(ready).toEqual(['x', 'x2', 'y']);
  });
});
