/**
 * Revocation (devices and single certificates), CRL publication (RFC 5280) and OCSP (RFC 6960)
 * as use cases, on both backends. CRLs are parsed with @peculiar/x509, OCSP with pkijs.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import * as x509 from '../../server/src/ca/x509.js';
import { createRevocation, type RevocationService } from '../../server/src/revocation/index.js';
import type { RevocationReason, StoreEvent } from '../../server/src/store/types.js';
import { makeCsr, ocspRequest, parseOcspResponse } from '../helpers/ca.js';
import {
  backends,
  CERT_VALIDITY_DAYS,
  type Harness,
  OPERATOR,
  openHarness,
  rejectsWith,
} from '../helpers/provisioning.js';

const list = await backends();
const DAY = 86_400_000;

interface ParsedCrl {
  number: bigint;
  entries: Map<string, { revokedAt: Date; reason: number }>;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  signatureValid: boolean;
}

async function parseCrl(h: Harness, der: Uint8Array): Promise<ParsedCrl> {
  const crl = new x509.X509Crl(der);
  const ext = crl.getExtension('2.5.29.20');
  if (!ext) throw new Error('CRL has no cRLNumber');
  const v = new Uint8Array(ext.value); // INTEGER TLV
  let n = 0n;
  for (const b of v.subarray(2, 2 + v[1]!)) n = (n << 8n) | BigInt(b);
  return {
    number: n,
    entries: new Map(
      crl.entries.map((e) => [e.serialNumber.toLowerCase(), { revokedAt: e.revocationDate, reason: e.reason ?? 0 }]),
    ),
    thisUpdate: crl.thisUpdate,
    nextUpdate: crl.nextUpdate,
    signatureValid: await crl.verify({ publicKey: h.ca.issuingCert.publicKey }),
  };
}

describe.each(list)('revocation, CRL and OCSP ($name)', (backend) => {
  let h: Harness;
  const events: StoreEvent[] = [];

  beforeAll(async () => {
    h = await openHarness(backend);
    h.store.onEvent((ev) => events.push(ev));
  });
  afterAll(async () => {
    await h?.close();
  });

  const enrolled = async (id: string) => {
    const [t] = await h.provisioning.createTokens({ deviceIds: [id] }, { actor: OPERATOR });
    return h.provisioning.enroll({ deviceId: id, token: t!.token, csr: (await makeCsr(id)).der });
  };
  const crlNow = async () => parseCrl(h, (await h.revocation.currentCrl()).der);

  it('publishes a signed, empty CRL before any revocation', async () => {
    const c = await h.revocation.currentCrl();
    const parsed = await parseCrl(h, c.der);
    expect(parsed.signatureValid).toBe(true);
    expect(parsed.entries.size).toBe(0);
    expect(parsed.number).toBe(c.number);
    expect(parsed.thisUpdate.getTime()).toBe(c.thisUpdate.getTime());
    expect(parsed.nextUpdate?.getTime()).toBe(c.nextUpdate.getTime());
    expect(c.nextUpdate.getTime() - c.thisUpdate.getTime()).toBe(DAY);
    expect(new x509.X509Crl(c.der).issuer).toBe(h.ca.issuingCert.subject);
    // cached: asking again does not build a new one
    expect((await h.revocation.currentCrl()).number).toBe(c.number);
  });

  it('revokes every certificate of a device: store, events, audit, CRL right away', async () => {
    const first = await enrolled('rd-1');
    const second = await h.provisioning.reenroll({
      clientCertDer: first.certificate.der,
      csr: (await makeCsr('rd-1')).der,
    });
    const before = await crlNow();
    const seenEvents = events.length;

    const r = await h.revocation.revokeDevice('rd-1', 1, OPERATOR);
    expect(r.serials.sort()).toEqual([first.certificate.serial, second.certificate.serial].sort());
    expect(await h.store.getDevice('rd-1')).toMatchObject({ status: 'revoked' });
    for (const s of r.serials)
      expect(await h.store.getCertificate(s)).toMatchObject({ status: 'revoked', revocationReason: 1 });

    const after = await crlNow();
    expect(after.number).toBeGreaterThan(before.number);
    expect(after.signatureValid).toBe(true);
    for (const s of r.serials) expect(after.entries.get(s)?.reason).toBe(1);

    await vi.waitFor(() => {
      const ev = events.slice(seenEvents).find((e) => e.type === 'device-revoked' && e.deviceId === 'rd-1');
      expect(ev).toBeDefined();
      expect((ev as { serials: string[] }).serials.sort()).toEqual([...r.serials].sort());
    });
    const audit = (await h.store.listAudit({ limit: 100_000 })).filter(
      (e) => e.action === 'device.revoked' && e.subject === 'rd-1',
    );
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actor: 'operator:alice' });
    expect(audit[0]!.details).toMatchObject({ reason: 1 });
    expect(h.observer.revocations).toContain(2);
  });

  it('revoking a revoked device again succeeds with no serials and no new audit event', async () => {
    await enrolled('rd-2');
    await h.revocation.revokeDevice('rd-2', 0, OPERATOR);
    const auditBefore = (await h.store.listAudit({ limit: 100_000 })).length;
    expect(await h.revocation.revokeDevice('rd-2', 4, OPERATOR)).toEqual({ serials: [] });
    expect((await h.store.listAudit({ limit: 100_000 })).length).toBe(auditBefore);
    const certs = await h.store.listCertificates('rd-2');
    expect(certs[0]).toMatchObject({ revocationReason: 0 }); // the first revocation stands
  });

  it('revoking a device without certificates still marks it revoked', async () => {
    await h.provisioning.createTokens({ deviceIds: ['rd-3'] }, { actor: OPERATOR });
    await rejectsWith(h.revocation.revokeDevice('rd-3', 0, OPERATOR), 'DEVICE_NOT_FOUND'); // no device row yet
    await enrolled('rd-4');
    await h.revocation.revokeCertificate((await h.store.listCertificates('rd-4'))[0]!.serial, 4, OPERATOR);
    expect(await h.revocation.revokeDevice('rd-4', 5, OPERATOR)).toEqual({ serials: [] });
    expect(await h.store.getDevice('rd-4')).toMatchObject({ status: 'revoked' });
    expect(
      (await h.store.listAudit({ limit: 100_000 })).some((e) => e.action === 'device.revoked' && e.subject === 'rd-4'),
    ).toBe(true);
  });

  it('reports unknown devices and certificates, and refuses what is not a serial', async () => {
    await rejectsWith(h.revocation.revokeDevice('nobody', 0, OPERATOR), 'DEVICE_NOT_FOUND');
    await rejectsWith(h.revocation.revokeCertificate('ab'.repeat(16), 0, OPERATOR), 'CERT_NOT_FOUND');
    for (const bad of ["'; DROP TABLE certificates; --", 'abc', 'a', '00', 'ab'.repeat(21), '']) {
      await rejectsWith(h.revocation.revokeCertificate(bad, 0, OPERATOR), 'BAD_REQUEST');
    }
  });

  it('revokes one certificate by serial (any case), with event, audit, CRL entry; idempotent', async () => {
    const a = await enrolled('rc-1');
    const seenEvents = events.length;
    await h.revocation.revokeCertificate(a.certificate.serial.toUpperCase(), 3, OPERATOR);
    expect(await h.store.getCertificate(a.certificate.serial)).toMatchObject({
      status: 'revoked',
      revocationReason: 3,
    });
    expect(await h.store.getDevice('rc-1')).toMatchObject({ status: 'active' }); // only the certificate
    const crl = await crlNow();
    expect(crl.entries.get(a.certificate.serial)?.reason).toBe(3);
    await vi.waitFor(() =>
      expect(events.slice(seenEvents)).toContainEqual(
        expect.objectContaining({ type: 'revoked', serial: a.certificate.serial, reason: 3 }),
      ),
    );
    const revokedAt = (await h.store.getCertificate(a.certificate.serial))!.revokedAt;
    await h.revocation.revokeCertificate(a.certificate.serial, 1, OPERATOR);
    expect(await h.store.getCertificate(a.certificate.serial)).toMatchObject({ revocationReason: 3, revokedAt });
    const audit = (await h.store.listAudit({ limit: 100_000 })).filter(
      (e) => e.action === 'cert.revoked' && e.details.serial === a.certificate.serial,
    );
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actor: 'operator:alice', subject: 'rc-1' });
  });

  it('accepts the RFC 5280 reasons 0-6, 9, 10 and refuses anything else', async () => {
    const reasons: RevocationReason[] = [0, 1, 2, 3, 4, 5, 6, 9, 10];
    const serials: string[] = [];
    for (const [i, reason] of reasons.entries()) {
      const r = await enrolled(`reason-${i}`);
      await h.revocation.revokeCertificate(r.certificate.serial, reason, OPERATOR);
      serials.push(r.certificate.serial);
    }
    const crl = await crlNow();
    for (const [i, reason] of reasons.entries()) expect(crl.entries.get(serials[i]!)?.reason).toBe(reason);

    const victim = await enrolled('reason-bad');
    for (const bad of [7, 8, 11, -1, 1.5, '1', null]) {
      await rejectsWith(
        h.revocation.revokeCertificate(victim.certificate.serial, bad as never, OPERATOR),
        'BAD_REQUEST',
      );
      await rejectsWith(h.revocation.revokeDevice('reason-bad', bad as never, OPERATOR), 'BAD_REQUEST');
    }
    expect(await h.store.getCertificate(victim.certificate.serial)).toMatchObject({ status: 'valid' });
  });

  it('gives every revocation a CRL containing it, with increasing numbers, even when they race', async () => {
    const certs = await Promise.all(Array.from({ length: 20 }, (_, i) => enrolled(`race-${i}`)));
    const numbers: bigint[] = [];
    await Promise.all(
      certs.map(async (c, i) => {
        if (i % 2) await h.revocation.revokeCertificate(c.certificate.serial, 1, OPERATOR);
        else await h.revocation.revokeDevice(c.certificate.commonName, 1, OPERATOR);
        const crl = await crlNow();
        expect(crl.entries.has(c.certificate.serial)).toBe(true);
        numbers.push(crl.number);
      }),
    );
    const final = await crlNow();
    for (const c of certs) expect(final.entries.has(c.certificate.serial)).toBe(true);
    for (const n of numbers) expect(final.number).toBeGreaterThanOrEqual(n);
    // numbers seen over time never go down
    const first = await crlNow();
    await h.revocation.revokeCertificate((await enrolled('race-last')).certificate.serial, 0, OPERATOR);
    expect((await crlNow()).number).toBeGreaterThan(first.number);
  });

  it('picks up revocations made elsewhere through store events', async () => {
    // A second service over the same database stands in for another process. Its CRL is valid
    // for a day, so only the revocation event can make it rebuild within the wait below.
    const other: RevocationService = createRevocation({ store: h.store, ca: h.ca, audit: h.audit });
    try {
      const start = await parseCrl(h, (await other.currentCrl()).der);
      const victim = await enrolled('elsewhere-1');
      await h.revocation.revokeCertificate(victim.certificate.serial, 1, OPERATOR);
      await vi.waitFor(
        async () => {
          const now = await parseCrl(h, (await other.currentCrl()).der);
          expect(now.entries.has(victim.certificate.serial)).toBe(true);
          expect(now.number).toBeGreaterThan(start.number);
        },
        { timeout: 10_000, interval: 50 },
      );
    } finally {
      await other.close();
    }
  });

  it('regenerates the CRL on a timer before nextUpdate; close() keeps serving the last one', async () => {
    const ticking: RevocationService = createRevocation({
      store: h.store,
      ca: h.ca,
      audit: h.audit,
      crlValidityMs: 4_000,
    });
    let closed = false;
    try {
      const first = await ticking.currentCrl();
      expect(first.nextUpdate.getTime() - first.thisUpdate.getTime()).toBe(4_000);
      // No request in between: the timer (at half of the validity) replaces it.
      await vi.waitFor(
        async () => {
          const now = await ticking.currentCrl();
          expect(now.number).toBeGreaterThan(first.number);
          expect(now.thisUpdate.getTime()).toBeLessThan(first.nextUpdate.getTime());
        },
        { timeout: 15_000, interval: 100 },
      );
      await ticking.close();
      closed = true;
      await expect(ticking.currentCrl()).resolves.toBeDefined(); // the last CRL is still served
    } finally {
      if (!closed) await ticking.close();
    }
  });

  it('keeps expired revoked certificates on the CRL for one CRL period, then drops them', async () => {
    const c = await enrolled('expiring-1');
    await h.revocation.revokeCertificate(c.certificate.serial, 1, OPERATOR);
    h.clock.advance(CERT_VALIDITY_DAYS * DAY + DAY / 2);
    try {
      await h.revocation.revokeCertificate((await enrolled('trigger-1')).certificate.serial, 0, OPERATOR);
      expect((await crlNow()).entries.has(c.certificate.serial)).toBe(true);
      h.clock.advance(2 * DAY);
      // past nextUpdate: currentCrl() builds a fresh one
      const later = await crlNow();
      expect(later.entries.has(c.certificate.serial)).toBe(false);
    } finally {
      h.clock.reset();
    }
    // Rebuild at the real time so later tests see a current CRL.
    await h.revocation.revokeCertificate((await enrolled('trigger-2')).certificate.serial, 0, OPERATOR);
  });

  describe('OCSP', () => {
    it('answers good, revoked (time and reason) and unknown, signed by the issuing CA', async () => {
      const good = await enrolled('ocsp-1');
      const bad = await enrolled('ocsp-2');
      await h.revocation.revokeCertificate(bad.certificate.serial, 1, OPERATOR);
      const stored = await h.store.getCertificate(bad.certificate.serial);

      const g = await parseOcspResponse(h.ca, await h.revocation.ocsp(await ocspRequest(h.ca, good.certificate.der)));
      expect(g).toMatchObject({
        responseStatus: 0,
        signatureValid: true,
        status: 'good',
        serial: good.certificate.serial,
      });
      if ('nextUpdate' in g && g.nextUpdate) expect(g.nextUpdate.getTime() - g.thisUpdate.getTime()).toBe(3_600_000);

      const r = await parseOcspResponse(h.ca, await h.revocation.ocsp(await ocspRequest(h.ca, bad.certificate.der)));
      expect(r).toMatchObject({ responseStatus: 0, signatureValid: true, status: 'revoked', reason: 1 });
      if (r.responseStatus === 0 && 'revokedAt' in r) {
        expect(r.revokedAt?.getTime()).toBe(Math.floor(stored!.revokedAt!.getTime() / 1000) * 1000);
      }

      const u = await parseOcspResponse(
        h.ca,
        await h.revocation.ocsp(await ocspRequest(h.ca, good.certificate.der, `7${'0'.repeat(30)}1`)),
      );
      expect(u).toMatchObject({ responseStatus: 0, signatureValid: true, status: 'unknown' });
    });

    it('answers malformedRequest for garbage', async () => {
      const m = await parseOcspResponse(h.ca, await h.revocation.ocsp(new Uint8Array([1, 2, 3])));
      expect(m).toEqual({ responseStatus: 1 });
    });

    it('reports an expired, never revoked certificate as good (revocation status only)', async () => {
      const c = await enrolled('ocsp-old');
      h.clock.advance((CERT_VALIDITY_DAYS + 2) * DAY);
      try {
        const a = await parseOcspResponse(h.ca, await h.revocation.ocsp(await ocspRequest(h.ca, c.certificate.der)));
        expect(a).toMatchObject({ status: 'good', signatureValid: true });
      } finally {
        h.clock.reset();
      }
    });

    it('reflects a revocation immediately', async () => {
      const c = await enrolled('ocsp-3');
      const req = await ocspRequest(h.ca, c.certificate.der);
      expect(await parseOcspResponse(h.ca, await h.revocation.ocsp(req))).toMatchObject({ status: 'good' });
      await h.revocation.revokeDevice('ocsp-3', 9, OPERATOR);
      expect(await parseOcspResponse(h.ca, await h.revocation.ocsp(req))).toMatchObject({
        status: 'revoked',
        reason: 9,
      });
    });
  });

  it('reported CRL publications to the observer', () => {
    expect(h.observer.crls.length).toBeGreaterThan(3);
  });
});
