/**
 * Renewal's new-key rule (RFC 7030 4.2.2 simplereenroll; CSR_KEY_REUSED) holds whatever encoding
 * the key comes in: the same EC key written as a compressed point is the same key. On both backends.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certParts } from '../../server/src/ca/cert-parts.js';
import { makeCsr } from '../helpers/ca.js';
import { withCompressedPoint } from '../helpers/compressed-csr.js';
import { backends, type Harness, OPERATOR, openHarness, rejectsWith } from '../helpers/provisioning.js';

const list = await backends();

describe.each(list)('renewal with the same key in another encoding ($name)', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await openHarness(backend);
  });
  afterAll(async () => {
    await h?.close();
  });

  const token = async (id: string) =>
    (await h.provisioning.createTokens({ deviceIds: [id] }, { actor: OPERATOR }))[0]!.token;

  it('a compressed-point CSR of the current key is refused with CSR_KEY_REUSED', async () => {
    const plain = await makeCsr('cmp-1');
    const first = await h.provisioning.enroll({ deviceId: 'cmp-1', token: await token('cmp-1'), csr: plain.der });
    const compressed = withCompressedPoint(plain.der, plain.keys.privateKey);
    expect(compressed.byteLength).toBeLessThan(plain.der.byteLength);

    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: first.certificate.der, csr: compressed }),
      'CSR_KEY_REUSED',
    );
    expect(await h.store.listCertificates('cmp-1')).toHaveLength(1);
    // The request itself was fine: a new key in the same encoding renews.
    const fresh = await makeCsr('cmp-1');
    const renewed = await h.provisioning.reenroll({
      clientCertDer: first.certificate.der,
      csr: withCompressedPoint(fresh.der, fresh.keys.privateKey),
    });
    expect(renewed.certificate.keyFingerprint).not.toBe(first.certificate.keyFingerprint);
  });

  it('a key first certified compressed cannot come back uncompressed', async () => {
    const plain = await makeCsr('cmp-2');
    const first = await h.provisioning.enroll({
      deviceId: 'cmp-2',
      token: await token('cmp-2'),
      csr: withCompressedPoint(plain.der, plain.keys.privateKey),
    });
    // Stored fingerprint = the canonical (uncompressed) key's.
    expect((await h.store.getCertificate(first.certificate.serial))?.keyFingerprint).toBe(
      first.certificate.keyFingerprint,
    );
    await rejectsWith(
      h.provisioning.reenroll({ clientCertDer: first.certificate.der, csr: plain.der }),
      'CSR_KEY_REUSED',
    );
  });

  it('a key certified compressed before fingerprints were canonical is still recognised', async () => {
    // A row as written before the fix: the certificate holds the compressed point and the stored
    // fingerprint is the hash of those bytes, not of the canonical key.
    const donor = await makeCsr('cmp-3-donor');
    const other = await h.provisioning.enroll({
      deviceId: 'cmp-3-donor',
      token: await token('cmp-3-donor'),
      csr: withCompressedPoint(donor.der, donor.keys.privateKey),
    });
    const rawFingerprint = createHash('sha256').update(certParts(other.certificate.der).spkiDer).digest('hex');
    expect(rawFingerprint).not.toBe(other.certificate.keyFingerprint);
    const current = await h.provisioning.enroll({
      deviceId: 'cmp-3',
      token: await token('cmp-3'),
      csr: (await makeCsr('cmp-3')).der,
    });
    await h.store.transaction((tx) =>
      tx.insertCertificate({
        serial: '7f'.repeat(16),
        deviceId: 'cmp-3',
        subject: 'CN=cmp-3',
        notBefore: new Date(Date.now() - 86_400_000),
        notAfter: new Date(Date.now() + 86_400_000),
        keyFingerprint: rawFingerprint,
        der: other.certificate.der,
      }),
    );
    await rejectsWith(
      h.provisioning.reenroll({
        clientCertDer: current.certificate.der,
        csr: (await makeCsr('cmp-3', donor.keys)).der,
      }),
      'CSR_KEY_REUSED',
    );
  });
});
