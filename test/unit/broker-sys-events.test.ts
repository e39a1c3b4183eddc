import mqemitter, { type Message } from 'mqemitter';
import { describe, expect, it } from 'vitest';
import { muteUnreadSysEvents } from '../../server/src/mqtt/broker.js';

const emit = (mq: ReturnType<typeof mqemitter>, topic: string) =>
  new Promise<void>((resolve) => mq.emit({ topic, payload: Buffer.from('x') } as unknown as Message, () => resolve()));

describe("aedes' unread $SYS events", () => {
  it('are dropped before the emitter; takeover announcements and messages still flow', async () => {
    const mq = mqemitter({ concurrency: 0, matchEmptyLevels: true });
    muteUnreadSysEvents(mq);
    const seen: string[] = [];
    mq.on('devices/#', (m, done) => {
      seen.push(m.topic);
      done();
    });
    mq.on('$SYS/#', (m, done) => {
      seen.push(m.topic);
      done();
    });
    for (const topic of [
      '$SYS/b1/disconnect/clients',
      '$SYS/b1/new/subscribes',
      '$SYS/b1/new/unsubscribes',
      '$SYS/b1/new/clients',
      '$SYS/b1/heartbeat',
      'devices/d1/telemetry',
      '$SYS/b1/disconnect/clients/extra',
    ]) {
      await emit(mq, topic); // the callback runs for dropped events too
    }
    expect(seen.sort()).toEqual(
      ['$SYS/b1/new/clients', '$SYS/b1/heartbeat', 'devices/d1/telemetry', '$SYS/b1/disconnect/clients/extra'].sort(),
    );
  });
});
