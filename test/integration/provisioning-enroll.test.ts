/**
 * Enrollment tokens and EST simpleenroll (RFC 7030 4.2.1) as use cases, on both store backends,
 * with a real CA and real CSRs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as x509 from '../../server/src/ca/x509.js';
import { codeOf } from '../../server/src/enrollment/context.js';
import { GroupCommit } from '../../server/src/enrollment/group-commit.js';
import { hashSecret } from '../../server/src/enrollment/secrets.js';
import { deviceUri } from '../../server/src/identifiers.js';
import type { NewAuditEvent, Store, StoreTx } from '../../server/src/store/types.js';
import { makeCsr } from '../helpers/ca.js';
import { backends, type Harness, OPERATOR, openHarness, rejectsWith, TOKEN_TTL_MS } from '../helpers/provisioning.js';
import { until } from '../helpers/wait.js';

const list = await backends();

describe.each(list)('enrollment tokens and enroll ($name)', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await openHarness(backend);
  });
  afterAll(async () => {
    await h?.close();
  });

  const token = async (deviceId: string, ttlMs?: number) => {
    const [t] = await h.provisioning.createTokens(
      { deviceIds: [deviceId] },
      { actor: OPERATOR, ...(ttlMs ? { ttlMs } : {}) },
    );
    return t!.token;
  };

  const failures = async (code: string) =>
    (await h.store.listAudit({ limit: 100_000 })).filter(
      (e) => e.action === 'enroll.failed' && e.details.code === code,
    );

  describe('createTokens', () => {
    it('issues one-time tokens bound to the device, stores only the hash, audits without the secret', async () => {
      const before = h.clock.now().getTime();
      const [t] = await h.provisioning.createTokens({ deviceIds: ['tok-1'] }, { actor: OPERATOR });
      expect(t!.deviceId).toBe('tok-1');
      expect(t!.token).toMatch(/^fgt_[A-Za-z0-9_-]{43}$/);
      expect(t!.expiresAt.getTime()).toBeGreaterThanOrEqual(before + TOKEN_TTL_MS);
      expect(t!.expiresAt.getTime()).toBeLessThanOrEqual(h.clock.now().getTime() + TOKEN_TTL_MS);

      const events = await h.store.listAudit({ limit: 100_000 });
      const created = events.filter((e) => e.action === 'token.created' && e.subject === 'tok-1');
      expect(created).toHaveLength(1);
      expect(created[0]!.actor).toBe('operator:alice');
      expect(created[0]!.details.deviceIds).toEqual(['tok-1']);
      const everything = JSON.stringify(events);
      expect(everything).not.toContain(t!.token);
      expect(everything).not.toContain(hashSecret(t!.token));

      // The store knows the token by its hash: consuming it for another device reports a mismatch
      // (read-only) rather than unknown.
      const probe = await h.store.consumeToken(hashSecret(t!.token), 'someone-else', h.clock.now());
      expect(probe).toEqual({ ok: false, reason: 'device_mismatch', deviceId: 'tok-1' });
    });

    it('makes a factory batch P0001..PNNNN with distinct tokens', async () => {
      const batch = await h.provisioning.createTokens({ count: 12, prefix: 'line7-' }, { actor: OPERATOR });
      expect(batch.map((t) => t.deviceId)).toEqual(
        Array.from({ length: 12 }, (_, i) => `line7-${String(i + 1).padStart(4, '0')}`),
      );
      expect(new Set(batch.map((t) => t.token)).size).toBe(12);
      const ev = (await h.store.listAudit({ limit: 100_000 })).find(
        (e) => e.action === 'token.created' && e.details.prefix === 'line7-',
      );
      expect(ev?.details).toMatchObject({ count: 12, first: 'line7-0001', last: 'line7-0012' });
    });

    it('pads to more digits for a batch at the cap of 10,000, and refuses more', async () => {
      const batch = await h.provisioning.createTokens({ count: 10_000, prefix: 'big' }, { actor: OPERATOR });
      expect(batch).toHaveLength(10_000);
      expect(batch[0]!.deviceId).toBe('big00001');
      expect(batch[9_999]!.deviceId).toBe('big10000');
      await rejectsWith(
        h.provisioning.createTokens({ count: 10_001, prefix: 'big' }, { actor: OPERATOR }),
        'BAD_REQUEST',
      );
    });

    it('refuses bad batches, bad ids and bad lifetimes', async () => {
      const bad = [
        { count: 0, prefix: 'P' },
        { count: 1.5, prefix: 'P' },
        { count: 3, prefix: 'bad prefix ' },
        { count: 3, prefix: '-starts-with-dash' },
        { count: 3, prefix: 'x'.repeat(61) },
        { deviceIds: [] },
        { deviceIds: ['ok-1', 'not ok'] },
        { deviceIds: ['dup', 'dup'] },
      ];
      for (const req of bad) {
        await rejectsWith(h.provisioning.createTokens(req as never, { actor: OPERATOR }), 'BAD_REQUEST');
      }
      for (const ttlMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 366 * 86_400_000]) {
        await rejectsWith(
          h.provisioning.createTokens({ deviceIds: ['ttl-1'] }, { actor: OPERATOR, ttlMs }),
          'BAD_REQUEST',
        );
      }
      // Nothing was written by the refused requests.
      const ev = (await h.store.listAudit({ limit: 100_000 })).filter(
        (e) => e.subject === 'ttl-1' || e.subject === 'ok-1',
      );
      expect(ev).toHaveLength(0);
    });

    it('refuses a token for a revoked device (CONFLICT): revoked identities are not reactivated', async () => {
      const csr = await makeCsr('gone-1');
      await h.provisioning.enroll({ deviceId: 'gone-1', token: await token('gone-1'), csr: csr.der });
      await h.revocation.revokeDevice('gone-1', 5, OPERATOR);
      await rejectsWith(h.provisioning.createTokens({ deviceIds: ['gone-1'] }, { actor: OPERATOR }), 'CONFLICT');
      // in a batch too, and the whole batch is refused
      await rejectsWith(
        h.provisioning.createTokens({ deviceIds: ['fresh-9', 'gone-1'] }, { actor: OPERATOR }),
        'CONFLICT',
      );
      await expect(h.store.consumeToken('0'.repeat(64), 'fresh-9', h.clock.now())).resolves.toEqual({
        ok: false,
        reason: 'unknown',
      });
    });
  });

  describe('enroll', () => {
    it('issues a certificate for the authenticated device and records it with its audit event', async () => {
      const t = await token('dev-1');
      const csr = await makeCsr('dev-1');
      const r = await h.provisioning.enroll({ deviceId: 'dev-1', token: t, csr: csr.der });

      const cert = new x509.X509Certificate(r.certificate.der);
      expect(cert.subject).toBe('CN=dev-1');
      expect(r.certificate.commonName).toBe('dev-1');
      expect(r.certificate.serial).toBe(cert.serialNumber.toLowerCase());
      const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
      expect(san?.names.items.map((n) => n.value)).toEqual([deviceUri('dev-1')]);
      expect(await cert.verify({ publicKey: h.ca.issuingCert.publicKey, signatureOnly: true })).toBe(true);
      // the key in the certificate is the CSR's key
      const spki = new Uint8Array(await crypto.subtle.exportKey('spki', csr.keys.publicKey));
      expect(Buffer.from(cert.publicKey.rawData).equals(Buffer.from(spki))).toBe(true);
      // chain: issuing CA, then root
      expect(r.chainDer.map((d) => new x509.X509Certificate(d).subject)).toEqual([
        h.ca.issuingCert.subject,
        h.ca.rootCert.subject,
      ]);

      const stored = await h.store.getCertificate(r.certificate.serial);
      expect(stored).toMatchObject({ deviceId: 'dev-1', status: 'valid', renewedFrom: null });
      expect(Buffer.from(stored!.der).equals(Buffer.from(r.certificate.der))).toBe(true);
      expect(await h.store.getDevice('dev-1')).toMatchObject({ kind: 'device', status: 'active' });

      const issued = (await h.store.listAudit({ limit: 100_000 })).filter(
        (e) => e.action === 'cert.issued' && e.details.serial === r.certificate.serial,
      );
      expect(issued).toHaveLength(1);
      expect(issued[0]).toMatchObject({ actor: 'device:dev-1', subject: 'dev-1' });
    });

    it('accepts the CSR as DER, base64 and PEM', async () => {
      const one = await makeCsr('fmt-1');
      const b64 = Buffer.from(one.der).toString('base64');
      await h.provisioning.enroll({ deviceId: 'fmt-1', token: await token('fmt-1'), csr: b64 });
      const two = await makeCsr('fmt-2');
      const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.from(two.der).toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
      await h.provisioning.enroll({ deviceId: 'fmt-2', token: await token('fmt-2'), csr: pem });
      expect(await h.store.listCertificates('fmt-2')).toHaveLength(1);
    });

    it('refuses a replayed token (TOKEN_USED)', async () => {
      const t = await token('replay-1');
      await h.provisioning.enroll({ deviceId: 'replay-1', token: t, csr: (await makeCsr('replay-1')).der });
      await rejectsWith(
        h.provisioning.enroll({ deviceId: 'replay-1', token: t, csr: (await makeCsr('replay-1')).der }),
        'TOKEN_USED',
      );
      expect(await h.store.listCertificates('replay-1')).toHaveLength(1);
      expect((await failures('TOKEN_USED')).some((e) => e.subject === 'replay-1')).toBe(true);
    });

    it('reports each authentication failure with its own code, audits only those about a real token, and consumes nothing', async () => {
      const t = await token('auth-1');
      const csr = (await makeCsr('auth-1')).der;
      const auditBefore = (await h.store.listAudit({ limit: 100_000 })).length;
      // unknown token (well-formed), malformed token, malformed device id
      await rejectsWith(
        h.provisioning.enroll({ deviceId: 'auth-1', token: `fgt_${'A'.repeat(43)}`, csr }),
        'TOKEN_INVALID',
      );
      await rejectsWith(h.provisioning.enroll({ deviceId: 'auth-1', token: 'hunter2', csr }), 'TOKEN_INVALID');
      await rejectsWith(h.provisioning.enroll({ deviceId: 'bad id!', token: t, csr }), 'TOKEN_INVALID');
      await rejectsWith(h.provisioning.enroll({ deviceId: '', token: t, csr }), 'TOKEN_INVALID');
      // bound to another device
      await rejectsWith(
        h.provisioning.enroll({ deviceId: 'auth-2', token: t, csr: (await makeCsr('auth-2')).der }),
        'TOKEN_DEVICE_MISMATCH',
      );
      // authentication comes before the CSR: a garbage CSR with a bad token is a token failure
      await rejectsWith(
        h.provisioning.enroll({ deviceId: 'auth-1', token: `fgt_${'B'.repeat(43)}`, csr: 'garbage' }),
        'TOKEN_INVALID',
      );

      // Issue 21: the five unauthenticated failures (no real token involved) appended nothing;
      // the mismatch names the device the token is bound to, the caller's claim kept apart.
      const added = (await h.store.listAudit({ limit: 100_000 })).slice(auditBefore);
      expect(added.map((e) => [e.action, e.actor, e.subject, e.details.code, e.details.claimedId])).toEqual([
        ['enroll.failed', 'device:auth-1', 'auth-1', 'TOKEN_DEVICE_MISMATCH', 'auth-2'],
      ]);
      expect(await h.store.getDevice('auth-2')).toBeNull();

      // None of that consumed the token.
      const r = await h.provisioning.enroll({ deviceId: 'auth-1', token: t, csr });
      expect(r.certificate.commonName).toBe('auth-1');
    });

    it('refuses an expired token (TOKEN_EXPIRED) without consuming it', async () => {
      const t = await token('exp-1', 60_000);
      h.clock.advance(61_000);
      try {
        await rejectsWith(
          h.provisioning.enroll({ deviceId: 'exp-1', token: t, csr: (await makeCsr('exp-1')).der }),
          'TOKEN_EXPIRED',
        );
      } finally {
        h.clock.reset();
      }
      expect((await failures('TOKEN_EXPIRED')).some((e) => e.subject === 'exp-1')).toBe(true);
      // Back inside its lifetime the token still works: the failure did not mark it used.
      await h.provisioning.enroll({ deviceId: 'exp-1', token: t, csr: (await makeCsr('exp-1')).der });
    });

    it('leaves the token usable when the CSR is rejected', async () => {
      const t = await token('csr-1');
      await rejectsWith(h.provisioning.enroll({ deviceId: 'csr-1', token: t, csr: 'not a csr' }), 'CSR_MALFORMED');
      const tampered = new Uint8Array((await makeCsr('csr-1')).der);
      tampered[tampered.length - 5]! ^= 0xff; // break the signature
      await rejectsWith(h.provisioning.enroll({ deviceId: 'csr-1', token: t, csr: tampered }), 'CSR_SIGNATURE_INVALID');
      expect(await h.store.listCertificates('csr-1')).toHaveLength(0);
      expect(await h.store.getDevice('csr-1')).toBeNull();
      expect((await failures('CSR_MALFORMED')).some((e) => e.subject === 'csr-1')).toBe(true);

      const r = await h.provisioning.enroll({ deviceId: 'csr-1', token: t, csr: (await makeCsr('csr-1')).der });
      expect(r.certificate.commonName).toBe('csr-1');
    });

    it('refuses a CSR whose CN is not the authenticated device id, token stays usable', async () => {
      const t = await token('cn-1');
      await rejectsWith(
        h.provisioning.enroll({ deviceId: 'cn-1', token: t, csr: (await makeCsr('cn-2')).der }),
        'CSR_SUBJECT_INVALID',
      );
      expect(await h.store.getDevice('cn-2')).toBeNull();
      expect(await h.store.listCertificates('cn-1')).toHaveLength(0);
      await h.provisioning.enroll({ deviceId: 'cn-1', token: t, csr: (await makeCsr('cn-1')).der });
    });

    it('refuses a device revoked after its token was made (DEVICE_REVOKED), token unconsumed', async () => {
      await h.provisioning.enroll({
        deviceId: 'late-1',
        token: await token('late-1'),
        csr: (await makeCsr('late-1')).der,
      });
      const second = await token('late-1');
      await h.revocation.revokeDevice('late-1', 1, OPERATOR);
      await rejectsWith(
        h.provisioning.enroll({ deviceId: 'late-1', token: second, csr: (await makeCsr('late-1')).der }),
        'DEVICE_REVOKED',
      );
      expect((await h.store.listCertificates('late-1')).filter((c) => c.status === 'valid')).toHaveLength(0);
      const probe = await h.store.consumeToken(hashSecret(second), 'late-1', h.clock.now());
      expect(probe.ok).toBe(true); // it was still unused
    });

    it('enrolls 200 devices in parallel with distinct tokens', async () => {
      const batch = await h.provisioning.createTokens({ count: 200, prefix: 'par-' }, { actor: OPERATOR });
      const csrs = await Promise.all(batch.map((t) => makeCsr(t.deviceId)));
      const results = await Promise.allSettled(
        batch.map((t, i) => h.provisioning.enroll({ deviceId: t.deviceId, token: t.token, csr: csrs[i]!.der })),
      );
      const rejected = results.filter((r) => r.status === 'rejected');
      expect(rejected.map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
      const serials = results.map(
        (r) => (r as PromiseFulfilledResult<{ certificate: { serial: string } }>).value.certificate.serial,
      );
      expect(new Set(serials).size).toBe(200);
      for (const t of batch.slice(0, 5)) expect(await h.store.listCertificates(t.deviceId)).toHaveLength(1);
      const issued = (await h.store.listAudit({ limit: 100_000 })).filter(
        (e) => e.action === 'cert.issued' && String(e.subject).startsWith('par-'),
      );
      expect(issued).toHaveLength(200);
      expect(await h.audit.verify()).toMatchObject({ ok: true });
    });

    it('group-commits 200 concurrent mixed requests: each gets its own outcome, bad ones leave their tokens usable', async () => {
      const tokens = await h.provisioning.createTokens({ count: 200, prefix: 'mix-' }, { actor: OPERATOR });
      await h.provisioning.enroll({
        deviceId: 'mix-revoked',
        token: await token('mix-revoked'),
        csr: (await makeCsr('mix-revoked')).der,
      });
      const revokedToken = await token('mix-revoked');
      await h.revocation.revokeDevice('mix-revoked', 1, OPERATOR);
      // what each request does wrong, if anything
      const kinds = ['good', 'cn', 'garbage', 'unknown-token', 'malformed-token', 'good', 'good'] as const;
      const expected: Record<(typeof kinds)[number], string> = {
        good: 'ok',
        cn: 'CSR_SUBJECT_INVALID',
        garbage: 'CSR_MALFORMED',
        'unknown-token': 'TOKEN_INVALID',
        'malformed-token': 'TOKEN_INVALID',
      };
      const kindOf = (i: number) => kinds[i % kinds.length]!;
      const csrs = await Promise.all(tokens.map((t) => makeCsr(t.deviceId)));
      const other = await makeCsr('mix-somebody-else');
      const revokedCsr = await makeCsr('mix-revoked');

      const auditBefore = (await h.store.listAudit({ limit: 100_000 })).length;
      const original = h.store.transaction;
      let transactions = 0;
      h.store.transaction = function (this: Store, fn) {
        transactions++;
        return original.call(this, fn);
      } as Store['transaction'];
      let results: PromiseSettledResult<unknown>[];
      try {
        results = await Promise.allSettled([
          ...tokens.map((t, i) => {
            const kind = kindOf(i);
            return h.provisioning.enroll({
              deviceId: t.deviceId,
              token: kind === 'unknown-token' ? `fgt_${'C'.repeat(43)}` : kind === 'malformed-token' ? 'nope' : t.token,
              csr: kind === 'cn' ? other.der : kind === 'garbage' ? 'garbage' : csrs[i]!.der,
            });
          }),
          h.provisioning.enroll({
            deviceId: 'mix-revoked',
            token: revokedToken,
            csr: revokedCsr.der,
          }),
        ]);
      } finally {
        h.store.transaction = original;
      }
      const outcome = (r: PromiseSettledResult<unknown>) =>
        r.status === 'fulfilled' ? 'ok' : ((r.reason as { code?: string }).code ?? String(r.reason));
      expect(results.slice(0, 200).map(outcome)).toEqual(tokens.map((_, i) => expected[kindOf(i)]));
      expect(outcome(results[200]!)).toBe('DEVICE_REVOKED');
      // grouped: far fewer transactions than requests (the first batch starts alone)
      expect(transactions).toBeGreaterThan(0);
      expect(transactions).toBeLessThanOrEqual(20);

      // one certificate per good request, none for the others; every outcome audited once
      const good = tokens.filter((_, i) => kindOf(i) === 'good');
      const bad = tokens.filter((_, i) => kindOf(i) !== 'good');
      for (const t of [...good.slice(0, 5), ...good.slice(-5)]) {
        expect(await h.store.listCertificates(t.deviceId)).toHaveLength(1);
      }
      for (const t of bad.slice(0, 10)) expect(await h.store.listCertificates(t.deviceId)).toHaveLength(0);
      const events = (await h.store.listAudit({ limit: 100_000 })).slice(auditBefore);
      expect(events.filter((e) => e.action === 'cert.issued')).toHaveLength(good.length);
      const failed = events.filter((e) => e.action === 'enroll.failed');
      // unknown and malformed tokens proved no identity: not audited (issue 21)
      const unauthenticated = tokens.filter((_, i) => kindOf(i).endsWith('-token'));
      expect(failed).toHaveLength(bad.length - unauthenticated.length + 1);
      expect(failed.some((e) => e.details.code === 'TOKEN_INVALID')).toBe(false);
      expect(failed.filter((e) => e.details.code === 'CSR_SUBJECT_INVALID')).toHaveLength(
        tokens.filter((_, i) => kindOf(i) === 'cn').length,
      );
      expect(failed.some((e) => e.subject === 'mix-revoked' && e.details.code === 'DEVICE_REVOKED')).toBe(true);
      expect(await h.audit.verify()).toMatchObject({ ok: true });

      // every bad request left its token usable
      const retried = await Promise.all(
        bad.map((t) =>
          h.provisioning.enroll({ deviceId: t.deviceId, token: t.token, csr: csrs[tokens.indexOf(t)]!.der }),
        ),
      );
      expect(retried.map((r) => r.certificate.commonName)).toEqual(bad.map((t) => t.deviceId));
      expect((await h.store.consumeToken(hashSecret(revokedToken), 'mix-revoked', h.clock.now())).ok).toBe(true);
      expect(await h.audit.verify()).toMatchObject({ ok: true });
    });

    it('fails every request of a batch whose commit fails (STORE_UNAVAILABLE), persisting none of it; the tokens stay usable', async () => {
      const tokens = await h.provisioning.createTokens({ count: 30, prefix: 'cfail-' }, { actor: OPERATOR });
      const csrs = await Promise.all(tokens.map((t) => makeCsr(t.deviceId)));
      const original = h.store.transaction;
      // the body runs completely, then the transaction fails as a COMMIT would (everything rolls back)
      h.store.transaction = function (this: Store, fn: (tx: StoreTx) => Promise<unknown>) {
        return original.call(this, async (tx) => {
          await fn(tx);
          throw new Error('could not commit (simulated)');
        });
      } as Store['transaction'];
      let results: PromiseSettledResult<unknown>[];
      try {
        results = await Promise.allSettled(
          tokens.map((t, i) =>
            h.provisioning.enroll({
              deviceId: t.deviceId,
              token: t.token,
              csr: i % 3 === 0 ? 'garbage' : csrs[i]!.der,
            }),
          ),
        );
      } finally {
        h.store.transaction = original;
      }
      const codes = results.map((r) => (r.status === 'rejected' ? (r.reason as { code?: string }).code : 'ok'));
      // Nothing decided in a rolled-back batch stands (a TOKEN_USED seen there may be undone too):
      // every request gets the store's error, including those that had failed on their own.
      expect(codes).toEqual(tokens.map(() => 'STORE_UNAVAILABLE'));
      for (const t of tokens) expect(await h.store.getDevice(t.deviceId)).toBeNull();
      const failed = (await h.store.listAudit({ limit: 100_000 })).filter(
        (e) => e.action === 'enroll.failed' && String(e.subject).startsWith('cfail-'),
      );
      expect(failed).toHaveLength(30); // audited apart, after the failed batch
      expect(failed.filter((e) => e.details.code === 'STORE_UNAVAILABLE')).toHaveLength(30);
      expect(
        (await h.store.listAudit({ limit: 100_000 })).some(
          (e) => e.subject === 'cfail-001' && e.action === 'cert.issued',
        ),
      ).toBe(false);
      const again = await Promise.all(
        tokens.map((t, i) => h.provisioning.enroll({ deviceId: t.deviceId, token: t.token, csr: csrs[i]!.der })),
      );
      expect(again).toHaveLength(30);
      expect(await h.audit.verify()).toMatchObject({ ok: true });
    });

    it('bounds the queue and the wait in it: refused at once when full, STORE_UNAVAILABLE after the timeout, all audited', async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      const slow = Object.create(h.store) as Store;
      slow.transaction = async (fn) => {
        await gate;
        return h.store.transaction(fn);
      };
      const g = new GroupCommit(slow, { maxBatch: 1, maxInFlight: 1, maxQueued: 2, queueTimeoutMs: 200 });
      const tag = `gc-${Date.now()}`;
      const job = (n: number) => ({
        run: async (): Promise<{ value: number; audit: NewAuditEvent }> => ({
          value: n,
          audit: { actor: 'test', action: 'gc.ok', subject: tag, details: { n } },
        }),
        failed: (e: unknown): NewAuditEvent => ({
          actor: 'test',
          action: 'gc.failed',
          subject: tag,
          details: { n, code: codeOf(e) },
        }),
      });
      const t0 = Date.now();
      const first = g.submit(job(1)); // taken into the first batch at once, which waits for the store
      // (every promise gets its handler at once: none may reject unobserved)
      const second = rejectsWith(g.submit(job(2)), 'STORE_UNAVAILABLE');
      const third = rejectsWith(g.submit(job(3)), 'STORE_UNAVAILABLE');
      const fourth = g.submit(job(4)).then(
        () => 'ok',
        (e: { code?: string }) => `${e.code}@${Date.now() - t0}`,
      );
      // queue full: refused without waiting for the timeout
      expect(await fourth).toMatch(/^STORE_UNAVAILABLE@\d+$/);
      expect(Number((await fourth).split('@')[1])).toBeLessThan(150);
      await Promise.all([second, third]);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
      expect(Date.now() - t0).toBeLessThan(5_000);
      release();
      expect(await first).toBe(1);
      // the rejections are recorded once the store answers
      // The audit rows are the state to wait for (written in the background): read until all four are there.
      const mine = await until(
        async () => (await h.store.listAudit({ limit: 100_000 })).filter((e) => e.subject === tag),
        (rows) => rows.length >= 4,
      );
      expect(mine.map((e) => `${e.action}:${e.details.n}`).sort()).toEqual([
        'gc.failed:2',
        'gc.failed:3',
        'gc.failed:4',
        'gc.ok:1',
      ]);
      expect(mine.filter((e) => e.action === 'gc.failed').every((e) => e.details.code === 'STORE_UNAVAILABLE')).toBe(
        true,
      );
    });

    it('lets exactly one of 50 parallel uses of one token succeed; the other 49 get TOKEN_USED', async () => {
      const t = await token('race-1');
      const csrs = await Promise.all(Array.from({ length: 50 }, () => makeCsr('race-1')));
      const results = await Promise.allSettled(
        csrs.map((c) => h.provisioning.enroll({ deviceId: 'race-1', token: t, csr: c.der })),
      );
      const ok = results.filter((r) => r.status === 'fulfilled');
      const codes = results
        .filter((r): r is PromiseRejectedResult => r.status === 'rejected')
        .map((r) => (r.reason as { code?: string }).code);
      expect(ok).toHaveLength(1);
      expect(codes).toEqual(Array(49).fill('TOKEN_USED'));
      expect(await h.store.listCertificates('race-1')).toHaveLength(1);
    });
  });
});
