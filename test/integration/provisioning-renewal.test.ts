/**
 * EST simplereenroll (RFC 7030 4.2.2) and service credentials as use cases, on both backends.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as x509 from '../../server/src/ca/x509.js';
import type { EnrollResult } from '../../server/src/enrollment/index.js';
import { serviceUri } from '../../server/src/identifiers.js';
import { createTestCa, makeCsr } from '../helpers/ca.js';
import {
  backends,
  CERT_VALIDITY_DAYS,
  type Harness,
  OPERATOR,
  openHarness,
  rejectsWith,
  URLS,
} from '../helpers/provisioning.js';

const list = await backends();
const DAY = 86_400_000;

describe.each(list)('re-enrollment and service credentials ($name)', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await openHarness(backend);
  });
  afterAll(async () => {
    await h?.close();
  });

  /** Enrolls `id` and returns the result plus the key pair used. */
  const enrolled = async (id: string) => {
    const [t] = await h.provisioning.createTokens({ deviceIds: [id] }, { actor: OPERATOR });
    const csr = await makeCsr(id);
    const r = await h.provisioning.enroll({ deviceId: id, token: t!.token, csr: csr.der });
    return { ...r, keys: csr.keys };
  };

  const renewals = async (code: string) =>
    (await h.store.listAudit({ limit: 100_000 })).filter(
      (e) => e.action === 'reenroll.failed' && e.details.code === code,
    );

  it('renews with a new key: new certificate linked to the old, old one still valid, audited', async () => {
    const first = await enrolled('ren-1');
    const r = await h.provisioning.reenroll({
      clientCertDer: first.certificate.der,
      csr: (await makeCsr('ren-1')).der,
    });
    expect(r.certificate.commonName).toBe('ren-1');
    expect(r.certificate.serial).not.toBe(first.certificate.serial);
    expect(r.certificate.keyFingerprint).not.toBe(first.certificate.keyFingerprint);
    const cert = new x509.X509Certificate(r.certificate.der);
    expect(await cert.verify({ publicKey: h.ca.issuingCert.publicKey, signatureOnly: true })).toBe(true);

    expect(await h.store.getCertificate(r.certificate.serial)).toMatchObject({
      deviceId: 'ren-1',
      status: 'valid',
      renewedFrom: first.certificate.serial,
    });
    expect(await h.store.getCertificate(first.certificate.serial)).toMatchObject({ status: 'valid' });

    const ev = (await h.store.listAudit({ limit: 100_000 })).filter(
      (e) => e.action === 'cert.renewed' && e.subject === 'ren-1',
    );
    expect(ev).toHaveLength(1);
    expect(ev[0]).toMatchObject({ actor: 'device:ren-1' });
    expect(ev[0]!.details).toMatchObject({ serial: r.certificate.serial, renewedFrom: first.certificate.serial });

    // The new certificate can renew in turn.
    const again = await h.provisioning.reenroll({
      clientCertDer: r.certificate.der,
      csr: (await makeCsr('ren-1')).der,
    });
    expect((await h.store.getCertificate(again.certificate.serial))?.renewedFrom).toBe(r.certificate.serial);
  });

  it('refuses to certify the same key again (CSR_KEY_REUSED), unless configured to allow it', async () => {
    const first = await enrolled('reuse-1');
    const sameKey = await makeCsr('reuse-1', first.keys);
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: first.certificate.der, csr: sameKey.der }),
      'CSR_KEY_REUSED',
    );
    expect(await renewals('CSR_KEY_REUSED')).toHaveLength(1);
    expect(await h.store.listCertificates('reuse-1')).toHaveLength(1);

    const lenient = h.provisioningWith({ allowKeyReuse: true });
    const r = await lenient.reenroll({ clientCertDer: first.certificate.der, csr: sameKey.der });
    expect(r.certificate.keyFingerprint).toBe(first.certificate.keyFingerprint);
    expect(r.certificate.serial).not.toBe(first.certificate.serial);
  });

  it('refuses a key certified for an earlier certificate of the device too', async () => {
    const first = await enrolled('reuse-2');
    const second = await h.provisioning.reenroll({
      clientCertDer: first.certificate.der,
      csr: (await makeCsr('reuse-2')).der,
    });
    const backToFirst = await makeCsr('reuse-2', first.keys);
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: second.certificate.der, csr: backToFirst.der }),
      'CSR_KEY_REUSED',
    );
  });

  it('requires the CSR to name the same device (CSR_SUBJECT_INVALID)', async () => {
    const first = await enrolled('same-1');
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: first.certificate.der, csr: (await makeCsr('someone-else')).der }),
      'CSR_SUBJECT_INVALID',
    );
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: first.certificate.der, csr: 'nonsense' }),
      'CSR_MALFORMED',
    );
    expect(await h.store.listCertificates('same-1')).toHaveLength(1);
    expect(await h.store.getDevice('someone-else')).toBeNull();
  });

  it('refuses a revoked certificate (CERT_REVOKED) and a revoked device', async () => {
    const a = await enrolled('rev-1');
    await h.revocation.revokeCertificate(a.certificate.serial, 1, OPERATOR);
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: a.certificate.der, csr: (await makeCsr('rev-1')).der }),
      'CERT_REVOKED',
    );

    const b = await enrolled('rev-2');
    await h.revocation.revokeDevice('rev-2', 1, OPERATOR);
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: b.certificate.der, csr: (await makeCsr('rev-2')).der }),
      'CERT_REVOKED',
    );
    expect((await h.store.listCertificates('rev-2')).filter((c) => c.status === 'valid')).toHaveLength(0);

    // A device marked revoked whose certificate is (somehow) still valid cannot renew either.
    const c = await enrolled('rev-3');
    await h.store.setDeviceStatus('rev-3', 'revoked');
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: c.certificate.der, csr: (await makeCsr('rev-3')).der }),
      'DEVICE_REVOKED',
    );
    expect(await h.store.listCertificates('rev-3')).toHaveLength(1);
    expect((await renewals('DEVICE_REVOKED')).some((e) => e.subject === 'rev-3')).toBe(true);
  });

  it('refuses an expired certificate (CERT_EXPIRED)', async () => {
    const a = await enrolled('old-1');
    h.clock.advance((CERT_VALIDITY_DAYS + 1) * DAY);
    try {
      await rejectsWith(
        h.provisioning.reenroll({ clientCertDer: a.certificate.der, csr: (await makeCsr('old-1')).der }),
        'CERT_EXPIRED',
      );
    } finally {
      h.clock.reset();
    }
    // Just before notAfter it still renews.
    h.clock.advance((CERT_VALIDITY_DAYS - 1) * DAY);
    try {
      await h.provisioning.reenroll({ clientCertDer: a.certificate.der, csr: (await makeCsr('old-1')).der });
    } finally {
      h.clock.reset();
    }
  });

  it('group-commits concurrent mixed renewals: each gets its own outcome, one new key certified once', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => `renmix-${String(i).padStart(2, '0')}`);
    const devices = await Promise.all(ids.map((id) => enrolled(id)));
    const kinds = ['good', 'same-key', 'cn', 'no-cert', 'revoked'] as const;
    const expected: Record<(typeof kinds)[number], string> = {
      good: 'ok',
      'same-key': 'CSR_KEY_REUSED',
      cn: 'CSR_SUBJECT_INVALID',
      'no-cert': 'CERT_REQUIRED',
      revoked: 'CERT_REVOKED',
    };
    const kindOf = (i: number) => kinds[i % kinds.length]!;
    for (const [i, d] of devices.entries()) {
      if (kindOf(i) === 'revoked') await h.revocation.revokeCertificate(d.certificate.serial, 1, OPERATOR);
    }
    const csrs = await Promise.all(
      devices.map((d, i) =>
        kindOf(i) === 'same-key' ? makeCsr(ids[i]!, d.keys) : makeCsr(kindOf(i) === 'cn' ? 'renmix-other' : ids[i]!),
      ),
    );
    // and one device renewing twice at once with one new key: one wins, the other sees it
    const twice = await makeCsr(ids[0]!);
    const results = await Promise.allSettled([
      ...devices.map((d, i) =>
        h.provisioning.reenroll({
          clientCertDer: kindOf(i) === 'no-cert' ? new Uint8Array(0) : d.certificate.der,
          csr: csrs[i]!.der,
        }),
      ),
      h.provisioning.reenroll({ clientCertDer: devices[0]!.certificate.der, csr: twice.der }),
      h.provisioning.reenroll({ clientCertDer: devices[0]!.certificate.der, csr: twice.der }),
    ]);
    const outcome = (r: PromiseSettledResult<EnrollResult>) =>
      r.status === 'fulfilled' ? 'ok' : ((r.reason as { code?: string }).code ?? String(r.reason));
    expect(results.slice(0, 40).map(outcome)).toEqual(ids.map((_, i) => expected[kindOf(i)]));
    expect(results.slice(40).map(outcome).sort()).toEqual(['CSR_KEY_REUSED', 'ok']);
    for (const [i, id] of ids.entries()) {
      const certs = await h.store.listCertificates(id);
      expect(certs).toHaveLength(i === 0 ? 3 : kindOf(i) === 'good' ? 2 : 1);
    }
    const renewed = (await h.store.listAudit({ limit: 100_000 })).filter(
      (e) => e.action === 'cert.renewed' && String(e.subject).startsWith('renmix-'),
    );
    expect(renewed).toHaveLength(ids.filter((_, i) => kindOf(i) === 'good').length + 1);
    const failed = (await h.store.listAudit({ limit: 100_000 })).filter(
      (e) =>
        e.action === 'reenroll.failed' &&
        (String(e.subject).startsWith('renmix-') || e.details.code === 'CERT_REQUIRED'),
    );
    expect(failed.filter((e) => e.details.code === 'CSR_KEY_REUSED')).toHaveLength(9);
    expect(failed.filter((e) => e.details.code === 'CERT_REQUIRED')).toHaveLength(0);
    expect(
      failed.filter((e) => e.details.code === 'CERT_REVOKED' && String(e.subject).startsWith('renmix-')),
    ).toHaveLength(8);
    expect(await h.audit.verify()).toMatchObject({ ok: true });
  });

  it('refuses a missing, unparsable or foreign certificate', async () => {
    const csr = (await makeCsr('who-1')).der;
    await rejectsWith(h.provisioning.reenroll({ clientCertDer: new Uint8Array(0), csr }), 'CERT_REQUIRED');
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: new Uint8Array([0x30, 0x03, 1, 2, 3]), csr }),
      'CERT_INVALID',
    );

    // A perfectly valid certificate for the same name from another CA: unknown serial.
    const other = await createTestCa();
    const { issueIdentityCertificate, checkCsr } = await import('../../server/src/ca/index.js');
    const checked = await checkCsr(csr);
    if (!checked.ok) throw checked.error;
    const foreign = await issueIdentityCertificate(other, checked.value, { now: new Date(), validityDays: 5, ...URLS });
    if (!foreign.ok) throw foreign.error;
    await rejectsWith(h.provisioning.reenroll({ clientCertDer: foreign.value.der, csr }), 'CERT_INVALID');

    // Same serial as one of ours but different bytes (a forgery): the stored DER must match.
    const ours = await enrolled('who-1');
    const forged = new Uint8Array(ours.certificate.der);
    forged[forged.length - 3]! ^= 0x01;
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: forged, csr: (await makeCsr('who-1')).der }),
      'CERT_INVALID',
    );
    // None of them proved an identity: nothing appended to the audit log (issue 21).
    expect(await renewals('CERT_INVALID')).toHaveLength(0);
    expect(await renewals('CERT_REQUIRED')).toHaveLength(0);
  });

  describe('issueService', () => {
    it('issues a service certificate (SAN urn:fleetgate:service:NAME), audited with the operator', async () => {
      const r: EnrollResult = await h.provisioning.issueService({
        name: 'ingest',
        csr: (await makeCsr('ingest')).der,
        actor: OPERATOR,
      });
      const cert = new x509.X509Certificate(r.certificate.der);
      expect(cert.subject).toBe('CN=ingest');
      expect(cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items.map((n) => n.value)).toEqual([
        serviceUri('ingest'),
      ]);
      expect(await h.store.getDevice('ingest')).toMatchObject({ kind: 'service', status: 'active' });
      const ev = (await h.store.listAudit({ limit: 100_000 })).filter(
        (e) => e.action === 'cert.issued' && e.subject === 'ingest',
      );
      expect(ev).toHaveLength(1);
      expect(ev[0]).toMatchObject({ actor: 'operator:alice' });
      expect(ev[0]!.details).toMatchObject({ kind: 'service', serial: r.certificate.serial });

      // A second credential for the same service (e.g. another replica) is fine.
      await h.provisioning.issueService({ name: 'ingest', csr: (await makeCsr('ingest')).der, actor: OPERATOR });
      expect(await h.store.listCertificates('ingest')).toHaveLength(2);
    });

    it('keeps service and device names apart, and checks name and CN', async () => {
      await h.provisioning.issueService({ name: 'svc-a', csr: (await makeCsr('svc-a')).der, actor: OPERATOR });
      await rejectsWith(h.provisioning.createTokens({ deviceIds: ['svc-a'] }, { actor: OPERATOR }), 'CONFLICT');
      await enrolled('dev-b');
      await rejectsWith(
        h.provisioning.issueService({ name: 'dev-b', csr: (await makeCsr('dev-b')).der, actor: OPERATOR }),
        'CONFLICT',
      );
      await rejectsWith(
        h.provisioning.issueService({ name: 'svc-c', csr: (await makeCsr('svc-d')).der, actor: OPERATOR }),
        'CSR_SUBJECT_INVALID',
      );
      await rejectsWith(
        h.provisioning.issueService({ name: 'bad name', csr: (await makeCsr('x')).der, actor: OPERATOR }),
        'BAD_REQUEST',
      );
      expect(await h.store.getDevice('svc-c')).toBeNull();
      await h.revocation.revokeDevice('svc-a', 5, OPERATOR);
      await rejectsWith(
        h.provisioning.issueService({ name: 'svc-a', csr: (await makeCsr('svc-a')).der, actor: OPERATOR }),
        'DEVICE_REVOKED',
      );
    });

    it('lets a service renew with its certificate like a device', async () => {
      const r = await h.provisioning.issueService({
        name: 'svc-r',
        csr: (await makeCsr('svc-r')).der,
        actor: OPERATOR,
      });
      const renewed = await h.provisioning.reenroll({
        clientCertDer: r.certificate.der,
        csr: (await makeCsr('svc-r')).der,
      });
      const cert = new x509.X509Certificate(renewed.certificate.der);
      expect(cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items.map((n) => n.value)).toEqual([
        serviceUri('svc-r'),
      ]);
    });
  });
});
