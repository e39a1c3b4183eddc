/**
 * When a renewal must carry TPM evidence (server/src/enrollment/renewal.ts renewalRequiresTpm):
 * the presented certificate is tpm-attested, or the token its credential descends from required
 * attestation. That token is the device's used token spent at the credential's origin (the newest
 * used at or before originIssuedAt); tokens used later belong to a later credential.
 */
import { describe, expect, it } from 'vitest';
import { renewalRequiresTpm } from '../../server/src/enrollment/renewal.js';
import type { CertificateRecord, TokenRecord } from '../../server/src/store/types.js';

const T0 = Date.UTC(2026, 0, 1);
const at = (minutes: number) => new Date(T0 + minutes * 60_000);

function cert(o: Partial<CertificateRecord>): CertificateRecord {
  return {
    serial: '0a',
    deviceId: 'dev-1',
    subject: 'CN=dev-1',
    notBefore: at(0),
    notAfter: at(60 * 24 * 30),
    status: 'valid',
    revokedAt: null,
    revocationReason: null,
    keyFingerprint: 'f'.repeat(64),
    der: new Uint8Array([0x30, 0x00]),
    issuedAt: at(10),
    renewedFrom: null,
    originIssuedAt: at(0),
    keyAssurance: 'unattested',
    keyType: 'ec-p256',
    issuer: null,
    ...o,
  };
}

const token = (id: string, usedAt: Date | null, requireAttestation: 'tpm' | null): TokenRecord => ({
  id,
  deviceId: 'dev-1',
  tokenHash: id.padEnd(64, '0'),
  createdAt: at(-100),
  expiresAt: at(1000),
  usedAt,
  createdBy: 'operator:alice',
  requireAttestation,
});

/** listTokens as the store answers `state: 'used'` for the device (newest first), recording the query. */
const tokens = (list: TokenRecord[], seen: unknown[] = []) => ({
  listTokens: async (q: unknown) => {
    seen.push(q);
    return list.filter((t) => t.usedAt !== null);
  },
});

describe('renewalRequiresTpm', () => {
  it('a tpm-attested certificate needs evidence, whatever its token said (services too)', async () => {
    expect(await renewalRequiresTpm(tokens([]), cert({ keyAssurance: 'tpm-attested' }), 'device')).toMatch(
      /tpm-attested/,
    );
    expect(await renewalRequiresTpm(tokens([]), cert({ keyAssurance: 'tpm-attested' }), 'service')).not.toBeNull();
  });

  it("an unattested certificate needs evidence when its origin's token required attestation", async () => {
    const seen: unknown[] = [];
    const why = await renewalRequiresTpm(tokens([token('t1', at(0), 'tpm')], seen), cert({}), 'device');
    expect(why).toMatch(/enrollment token/);
    expect(seen).toEqual([{ deviceId: 'dev-1', state: 'used' }]);
  });

  it('the origin token is the newest used at or before the origin: earlier and later tokens do not count', async () => {
    // Enrolled first with a requiring token, re-provisioned later with one that does not require.
    const history = [token('old', at(0), 'tpm'), token('new', at(100), null)];
    expect(await renewalRequiresTpm(tokens(history), cert({ originIssuedAt: at(100) }), 'device')).toBeNull();
    // The certificate descends from the first enrollment: the requiring token rules.
    expect(await renewalRequiresTpm(tokens(history), cert({ originIssuedAt: at(0) }), 'device')).not.toBeNull();
    // The reverse: the newer token requires it and the credential is the newer one.
    const reverse = [token('old', at(0), null), token('new', at(100), 'tpm')];
    expect(await renewalRequiresTpm(tokens(reverse), cert({ originIssuedAt: at(100) }), 'device')).not.toBeNull();
    expect(await renewalRequiresTpm(tokens(reverse), cert({ originIssuedAt: at(0) }), 'device')).toBeNull();
  });

  it('no token, an unused one, or a service: not required', async () => {
    expect(await renewalRequiresTpm(tokens([]), cert({}), 'device')).toBeNull();
    expect(await renewalRequiresTpm(tokens([token('u', null, 'tpm')]), cert({}), 'device')).toBeNull();
    expect(await renewalRequiresTpm(tokens([token('t', at(0), 'tpm')]), cert({}), 'service')).toBeNull();
  });
});
