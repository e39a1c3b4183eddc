/**
 * The key assurance the broker reads from a client certificate (server/src/mqtt/key-assurance.ts)
 * and the admission decision on it (FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE). Certificates are real:
 * issued by fleetgate's CA with and without the tpm-attested policy, and made with @peculiar/x509
 * carrying another policy, anyPolicy, a malformed or a duplicated certificatePolicies extension.
 * Everything but the one well-formed policy is `unattested` (fail closed); no input throws.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { POLICY_KEY_TPM_ATTESTED } from '../../server/src/attest/oids.js';
import { type CertificateAuthority, checkCsr, issueIdentityCertificate } from '../../server/src/ca/index.js';
import * as x509 from '../../server/src/ca/x509.js';
import { admit, type RevocationView } from '../../server/src/mqtt/admission.js';
import { identityOf } from '../../server/src/mqtt/identity.js';
import { keyAssuranceOf, meetsKeyAssurance } from '../../server/src/mqtt/key-assurance.js';
import type { Identity } from '../../server/src/mqtt/types.js';
import { createTestCa, makeCsr, newKeys } from '../helpers/ca.js';

const URLS = { crlUrl: 'http://fleetgate.test/crl', ocspUrl: 'http://fleetgate.test/ocsp' };
const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const POLICIES_OID = '2.5.29.32';

/** A self-signed certificate with exactly these extensions (whatever their bytes). */
async function certWith(extensions: x509.Extension[]): Promise<Uint8Array> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '0a1b2c',
    name: 'CN=dev-x',
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys,
    signingAlgorithm: EC,
    extensions,
  });
  return new Uint8Array(cert.rawData);
}

const policies = (...oids: string[]) => new x509.CertificatePolicyExtension(oids, false);

describe('keyAssuranceOf', () => {
  let ca: CertificateAuthority;
  const issued: Record<'tpm-attested' | 'unattested', Uint8Array> = {} as never;

  beforeAll(async () => {
    ca = await createTestCa();
    for (const keyAssurance of ['tpm-attested', 'unattested'] as const) {
      const checked = await checkCsr((await makeCsr('dev-1')).der);
      if (!checked.ok) throw checked.error;
      const r = await issueIdentityCertificate(ca, checked.value, {
        now: new Date(),
        validityDays: 1,
        ...URLS,
        keyAssurance,
      });
      if (!r.ok) throw r.error;
      issued[keyAssurance] = r.value.der;
    }
  });

  it("reads fleetgate's tpm-attested policy from a certificate the CA issued, and its absence", () => {
    expect(keyAssuranceOf(issued['tpm-attested'])).toBe('tpm-attested');
    expect(keyAssuranceOf(issued.unattested)).toBe('unattested');
  });

  it('finds the policy among others, in any position; with qualifiers too', async () => {
    expect(keyAssuranceOf(await certWith([policies('1.2.3.4', POLICY_KEY_TPM_ATTESTED)]))).toBe('tpm-attested');
    expect(keyAssuranceOf(await certWith([policies(POLICY_KEY_TPM_ATTESTED, '2.23.140.1.2.1')]))).toBe('tpm-attested');
  });

  it('is unattested for no extensions, another policy, anyPolicy, a neighbour of our OID', async () => {
    expect(keyAssuranceOf(await certWith([]))).toBe('unattested');
    expect(keyAssuranceOf(await certWith([policies('2.23.140.1.2.1')]))).toBe('unattested');
    expect(keyAssuranceOf(await certWith([policies('2.5.29.32.0')]))).toBe('unattested'); // anyPolicy
    // One arc more, one arc less, the sibling: an exact OID match only.
    const arc = POLICY_KEY_TPM_ATTESTED;
    for (const near of [`${arc}.1`, arc.slice(0, arc.lastIndexOf('.')), `${arc.slice(0, -1)}2`]) {
      expect(keyAssuranceOf(await certWith([policies(near)])), near).toBe('unattested');
    }
  });

  it('is unattested (fail closed) for a malformed or duplicated certificatePolicies extension', async () => {
    const good = policies(POLICY_KEY_TPM_ATTESTED);
    const raw = (value: number[]) => new x509.Extension(POLICIES_OID, false, new Uint8Array(value));
    // Twice: RFC 5280 4.2 allows one instance; even two that agree are refused.
    expect(keyAssuranceOf(await certWith([good, policies(POLICY_KEY_TPM_ATTESTED)]))).toBe('unattested');
    const oid = [...new Uint8Array(good.value)].slice(4); // the PolicyInformation's OID TLV
    const bad: [string, number[]][] = [
      ['not DER at all', [0xde, 0xad, 0xbe, 0xef]],
      ['empty SEQUENCE OF', [0x30, 0x00]],
      ['truncated', [...new Uint8Array(good.value)].slice(0, -3)],
      ['trailing bytes', [...new Uint8Array(good.value), 0x00]],
      ['a SET, not a SEQUENCE', [0x31, ...new Uint8Array(good.value).slice(1)]],
      ['PolicyInformation without its OID', [0x30, 0x02, 0x30, 0x00]],
      ['the OID bare, not in a PolicyInformation', [0x30, oid.length, ...oid]],
      ['an OCTET STRING where the OID goes', [0x30, oid.length + 2, 0x30, oid.length, 0x04, ...oid.slice(1)]],
      ['a non-minimal length', [0x30, 0x81, 0x02, 0x30, 0x00]],
      ['qualifiers that are not a SEQUENCE', [0x30, oid.length + 4, 0x30, oid.length + 2, ...oid, 0x05, 0x00]],
    ];
    for (const [what, value] of bad) expect(keyAssuranceOf(await certWith([raw(value)])), what).toBe('unattested');
  });

  it('is unattested for bytes that are not a certificate, and never throws on any mutation', () => {
    for (const b of [undefined, null, new Uint8Array(0), new Uint8Array([0x30]), new Uint8Array([0x30, 0x80, 0, 0])]) {
      expect(keyAssuranceOf(b)).toBe('unattested');
    }
    const der = issued['tpm-attested'];
    expect(keyAssuranceOf(der.subarray(0, der.length - 1))).toBe('unattested');
    expect(keyAssuranceOf(new Uint8Array([...der, 0]))).toBe('unattested');
    // Every single-byte change and every truncation: an answer, never an exception. (A flipped
    // byte inside the signature leaves the policy readable: the TLS layer verified the real one.)
    for (let i = 0; i < der.length; i++) {
      const flipped = new Uint8Array(der);
      flipped[i] = flipped[i]! ^ 0xff;
      expect(['tpm-attested', 'unattested']).toContain(keyAssuranceOf(flipped));
      expect(keyAssuranceOf(der.subarray(0, i))).toBe('unattested');
    }
  });

  it('identityOf carries the assurance of the certificate Node hands over (its raw DER)', () => {
    for (const assurance of ['tpm-attested', 'unattested'] as const) {
      const cert = new x509.X509Certificate(issued[assurance]);
      const peer = {
        subject: { CN: 'dev-1' },
        subjectaltname: 'URI:urn:fleetgate:device:dev-1',
        serialNumber: cert.serialNumber,
        valid_to: cert.notAfter.toUTCString(),
        raw: Buffer.from(issued[assurance]),
      };
      const r = identityOf(peer as never);
      expect(r.ok && r.identity.keyAssurance).toBe(assurance);
    }
  });
});

describe('admission with FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE', () => {
  const view: RevocationView = { isRevoked: () => false, fresh: () => true };
  const who = (kind: Identity['kind'], keyAssurance?: Identity['keyAssurance']): Identity => ({
    kind,
    id: kind === 'device' ? 'dev-1' : 'ingest',
    serial: '0a',
    notAfter: 2_000,
    ...(keyAssurance ? { keyAssurance } : {}),
  });
  const connect = (id: Identity) => ({ clientId: id.id });

  it('tpm-attested: admits an attested device, refuses an unattested one and one that says nothing', () => {
    const decide = (id: Identity) => admit(connect(id), id, 1_000, view, 'tpm-attested');
    expect(decide(who('device', 'tpm-attested'))).toEqual({ ok: true });
    expect(decide(who('device', 'unattested'))).toEqual({ refuse: 'key_assurance' });
    expect(decide(who('device'))).toEqual({ refuse: 'key_assurance' });
    // Services hold operator-issued credentials: not subject to the device requirement.
    expect(decide(who('service', 'unattested'))).toEqual({ ok: true });
  });

  it('none (the default): admits both', () => {
    for (const a of ['tpm-attested', 'unattested', undefined] as const) {
      expect(admit(connect(who('device', a)), who('device', a), 1_000, view)).toEqual({ ok: true });
      expect(admit(connect(who('device', a)), who('device', a), 1_000, view, 'none')).toEqual({ ok: true });
    }
    expect(meetsKeyAssurance(undefined, 'tpm-attested')).toBe(false);
  });

  it('revocation and expiry are decided first: a revoked attested device is refused as revoked', () => {
    const id = who('device', 'unattested');
    expect(admit(connect(id), id, 1_000, { ...view, isRevoked: () => true }, 'tpm-attested')).toEqual({
      refuse: 'revoked',
    });
    expect(admit(connect(id), id, 3_000, view, 'tpm-attested')).toEqual({ refuse: 'expired' });
  });
});
