/**
 * A batch that cannot be recorded while the database is down: every request fails with
 * STORE_UNAVAILABLE, and the rejection that could not be audited either is reported on the
 * server's log (pino, through GroupCommit's log), not as a Node process warning; the same for a
 * background CRL regeneration that fails.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { GroupCommit, groupCommit } from '../../server/src/enrollment/group-commit.js';
import type { Store } from '../../server/src/store/types.js';

/** A store whose database is gone: every transaction and audit append fails as postgres.js does. */
function downStore(): Store {
  const refused = () =>
    Promise.reject(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }));
  return { transaction: refused, appendAuditMany: refused } as unknown as Store;
}

const job = {
  run: async () => ({ value: 1, audit: { actor: 'device:d1', action: 'cert.issued', subject: 'd1' } }),
  failed: () => ({
    actor: 'device:d1',
    action: 'reenroll.failed',
    subject: 'd1',
    details: { code: 'STORE_UNAVAILABLE' },
  }),
};

const warnings: Error[] = [];
const onWarning = (w: Error) => warnings.push(w);
process.on('warning', onWarning);
afterEach(() => {
  warnings.length = 0;
});

describe('GroupCommit with the database down', () => {
  it('logs the rejection it could not audit, and emits no process warning', async () => {
    const logged: { fields: Record<string, unknown>; message: string }[] = [];
    const g = new GroupCommit(downStore(), { log: { error: (fields, message) => logged.push({ fields, message }) } });
    await expect(g.submit(job)).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    await new Promise((r) => setImmediate(r));
    expect(logged).toHaveLength(1);
    expect(logged[0]?.message).toBe('could not audit 1 rejected certificate request(s)');
    expect(logged[0]?.fields.events).toBe(1);
    expect((logged[0]?.fields.err as Error | undefined)?.message).toContain('ECONNREFUSED');
    expect(warnings).toEqual([]);
  });

  it("the store's shared loop takes the log the composition root gives it", async () => {
    const store = downStore();
    const logged: string[] = [];
    groupCommit(store, { error: (_f, message) => logged.push(message) });
    await expect(groupCommit(store).submit(job)).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    await new Promise((r) => setImmediate(r));
    expect(logged).toEqual(['could not audit 1 rejected certificate request(s)']);
    expect(warnings).toEqual([]);
  });
});

describe('CRL regeneration with the database down', () => {
  it('logs the failed background regeneration, and emits no process warning', async () => {
    const { CrlPublisher } = await import('../../server/src/revocation/crl-publisher.js');
    const { createTestCa } = await import('../helpers/ca.js');
    const logged: string[] = [];
    // The log line is the event that proves the background regeneration ran and failed.
    let onLogged!: () => void;
    const firstLog = new Promise<void>((resolve) => {
      onLogged = resolve;
    });
    const crl = new CrlPublisher({
      store: downStore(),
      ca: await createTestCa(),
      now: () => new Date(),
      validityMs: 3_600_000,
      log: {
        error: (_f, message) => {
          logged.push(message);
          onLogged();
        },
      },
    });
    try {
      crl.refreshSoon();
      await firstLog;
      expect(logged).toEqual(['CRL regeneration after a change failed']);
      expect(warnings).toEqual([]);
    } finally {
      await crl.close();
    }
  });
});
