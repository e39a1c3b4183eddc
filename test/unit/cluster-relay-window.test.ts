import type { Message } from 'mqemitter';
import { describe, expect, it } from 'vitest';
import { relayWorker, tick } from '../helpers/relay.js';

describe('the IPC emitter (a worker): backpressure across the relay', () => {
  it('holds publishes back once 1 MiB is on its way, until the primary reports it relayed', async () => {
    const { sent, relay, mq } = relayWorker();
    const done: string[] = [];
    const publish = (topic: string, size: number) =>
      mq.emit({ cmd: 'publish', topic, payload: Buffer.alloc(size), qos: 0 } as unknown as Message, () =>
        done.push(topic),
      );
    publish('devices/d1/small', 10);
    await tick();
    expect(done).toEqual(['devices/d1/small']); // under the window: completes as its batch leaves
    publish('devices/d1/big', 1024 * 1024);
    await tick();
    expect(done).toEqual(['devices/d1/small', 'devices/d1/big']); // still under it when sent
    publish('devices/d1/held', 10);
    await tick();
    expect(sent).toHaveLength(3);
    expect(done).toHaveLength(2); // over the window now: waits for its own batch's report
    relay.relayed(); // the small batch
    relay.relayed(); // the big one: the window is free again, but 'held' waits for its batch
    expect(done).toHaveLength(2);
    relay.relayed();
    expect(done).toEqual(['devices/d1/small', 'devices/d1/big', 'devices/d1/held']);
    publish('devices/d1/after', 10);
    await tick();
    expect(done).toHaveLength(4);
    relay.relayed();
    relay.relayed(); // nothing pending: no effect
    expect(done).toHaveLength(4);
  });
});
