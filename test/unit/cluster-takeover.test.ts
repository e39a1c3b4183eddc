import type { Message } from 'mqemitter';
import { describe, expect, it, vi } from 'vitest';
import { ClientOwners } from '../../server/src/cluster/client-owners.js';
import { TAKEOVER_BROKER_ID } from '../../server/src/cluster/ipc-emitter.js';
import { decodePackets } from '../../server/src/cluster/relay-codec.js';
import { relayWorker, tick } from '../helpers/relay.js';

describe('ClientOwners (the primary: which worker holds which client id)', () => {
  it('orders a takeover only from the worker that holds a claimed id', () => {
    const owners = new ClientOwners<string>();
    expect(owners.apply('A', ['d1', 'd2'], [])).toEqual(new Map());
    expect(owners.apply('B', ['d3'], [])).toEqual(new Map());
    // d1 reconnects on B: A must close its d1; claiming an id you already hold is no takeover.
    expect(owners.apply('B', ['d1', 'd3'], [])).toEqual(new Map([['A', ['d1']]]));
    expect(owners.apply('C', ['d1', 'd2', 'd3'], [])).toEqual(
      new Map([
        ['B', ['d1', 'd3']],
        ['A', ['d2']],
      ]),
    );
    expect(owners.size).toBe(3);
  });

  it('lets a worker release only what it holds, and forgets a dead worker', () => {
    const owners = new ClientOwners<string>();
    owners.apply('A', ['d1', 'd2'], []);
    owners.apply('B', ['d1'], []);
    // A's late release of d1 (its connection was taken over) must not free B's d1.
    owners.apply('A', [], ['d1', 'd2']);
    expect(owners.size).toBe(1);
    expect(owners.apply('C', ['d1'], [])).toEqual(new Map([['B', ['d1']]]));
    // A claim and a release of the same id in one batch: the worker holds it no more.
    owners.apply('A', ['d9'], ['d9']);
    expect(owners.apply('B', ['d9'], [])).toEqual(new Map());
    owners.forget('C');
    owners.forget('B');
    expect(owners.size).toBe(0);
  });
});

describe('the IPC emitter (a worker): claims, releases and takeover orders', () => {
  const announce = (id: string, broker = 'w1') =>
    ({ cmd: 'publish', topic: `$SYS/${broker}/new/clients`, payload: Buffer.from(id), qos: 0 }) as unknown as Message;

  it('sends client ids as claims and releases, never the announcement itself', async () => {
    const { sent, relay, mq } = relayWorker();
    const local: string[] = [];
    mq.on('$SYS/+/new/clients', (m, done) => {
      local.push(m.topic);
      done();
    });
    await new Promise<void>((r) => mq.emit(announce('d1'), () => r()));
    relay.clientGone?.('d0');
    relay.clientGone?.('d2');
    mq.emit(announce('d2')); // d2 is back in the same turn: its release is cancelled
    mq.emit({ cmd: 'publish', topic: 'devices/d1/telemetry', payload: Buffer.from('x'), qos: 0 } as unknown as Message);
    await tick();
    expect(sent).toHaveLength(1);
    expect(sent[0]?.claims).toEqual(['d1', 'd2']);
    expect(sent[0]?.releases).toEqual(['d0']);
    expect(sent[0]?.interest).toEqual(['+$SYS/+/new/clients']);
    expect(decodePackets(sent[0]?.packets as Buffer).map((p) => p.topic)).toEqual(['devices/d1/telemetry']);
    expect(local).toEqual(['$SYS/w1/new/clients', '$SYS/w1/new/clients']);
    await tick();
    expect(sent).toHaveLength(1); // nothing new, nothing sent
  });

  it('sends claims within 10 ms and releases within a second when no packet carries them', () => {
    vi.useFakeTimers();
    try {
      const { sent, relay, mq } = relayWorker();
      relay.clientGone?.('d0');
      mq.emit(announce('d1'));
      vi.advanceTimersByTime(5);
      mq.emit(announce('d2')); // the same batch: the first claim's deadline holds
      vi.advanceTimersByTime(6);
      expect(sent).toEqual([{ packets: Buffer.alloc(0), claims: ['d1', 'd2'], releases: ['d0'], interest: [] }]);
      relay.clientGone?.('d1');
      vi.advanceTimersByTime(900);
      expect(sent).toHaveLength(1);
      vi.advanceTimersByTime(200);
      expect(sent[1]).toEqual({ packets: Buffer.alloc(0), claims: [], releases: ['d1'], interest: [] });
    } finally {
      vi.useRealTimers();
    }
  });

  it('turns a takeover order into the announcement aedes closes its client on', async () => {
    const { relay, mq } = relayWorker();
    const got: [string, string][] = [];
    mq.on('$SYS/+/new/clients', (m, done) => {
      got.push([m.topic, Buffer.from(m.payload as Uint8Array).toString()]);
      done();
    });
    relay.takeOver(['d1', 'svc-é']);
    await tick();
    expect(got).toEqual([
      [`$SYS/${TAKEOVER_BROKER_ID}/new/clients`, 'd1'],
      [`$SYS/${TAKEOVER_BROKER_ID}/new/clients`, 'svc-é'],
    ]);
  });
});
