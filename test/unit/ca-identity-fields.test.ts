/**
 * ca/identity-fields.ts reads serial, notAfter, CNs and SAN URIs from DER on every broker
 * connection instead of Node's getPeerCertificate(). Checked against Node's own X509Certificate
 * on certificates made by openssl (other string types, GeneralizedTime, several names) and by
 * our CA, and against broken DER.
 */
import { X509Certificate } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { checkCsr } from '../../server/src/ca/csr-policy.js';
import { identityFields } from '../../server/src/ca/identity-fields.js';
import { issueIdentityCertificate } from '../../server/src/ca/index.js';
import { createTestCa, makeCsr, newKeys } from '../helpers/ca.js';
import { OpensslDir, opensslAvailable } from '../helpers/openssl.js';

/** What Node reports, in identityFields' terms. */
function nodeView(der: Uint8Array) {
  const x = new X509Certificate(der);
  const cns = x.subject
    .split('\n')
    .filter((l) => l.startsWith('CN='))
    .map((l) => l.slice(3));
  const uris = (x.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((p) => p.startsWith('URI:'))
    .map((p) => p.slice(4));
  return {
    serial: x.serialNumber.toLowerCase().replace(/^(00)+(?=..)/, ''),
    notAfter: Date.parse(x.validTo),
    commonNames: cns,
    sanUris: uris,
  };
}

describe('identityFields', () => {
  const ssl = opensslAvailable('identity fields vs openssl') ? new OpensslDir() : null;
  afterAll(() => ssl?.cleanup());

  /** A self-signed certificate from `openssl req -x509` with the given subject and extensions. */
  function opensslCert(subj: string, ext: string[], extra: string[] = []): Uint8Array {
    if (!ssl) throw new Error('no openssl');
    const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    args.push('-keyout', ssl.path('k.pem'), '-outform', 'DER', '-out', ssl.path('c.der'), '-subj', subj);
    for (const e of ext) args.push('-addext', e);
    ssl.ok([...args, ...extra]);
    return new Uint8Array(ssl.read('c.der'));
  }

  it.runIf(ssl)('agrees with Node on openssl certificates', () => {
    const cases: Uint8Array[] = [
      opensslCert('/CN=dev-1', ['subjectAltName=URI:urn:fleetgate:device:dev-1']),
      opensslCert('/O=x/CN=a/CN=b', ['subjectAltName=DNS:x.example,IP:10.0.0.1,URI:urn:one,email:a@b.c,URI:urn:two']),
      opensslCert('/O=no common name', []),
      opensslCert('/CN=déjà-vu', [], ['-utf8']),
      // notAfter past 2049: GeneralizedTime
      opensslCert('/CN=long', [], ['-days', '12000']),
      opensslCert('/CN=serial', [], ['-set_serial', '0x80']),
      opensslCert('/CN=serial', [], ['-set_serial', '1']),
    ];
    for (const der of cases) expect(identityFields(der)).toEqual(nodeView(der));
  });

  it('reads certificates of our CA', async () => {
    const ca = await createTestCa();
    const keys = await newKeys();
    const checked = await checkCsr((await makeCsr('sensor-7', keys)).der, { identity: 'device' });
    if (!checked.ok) throw checked.error;
    const issued = await issueIdentityCertificate(ca, checked.value, {
      now: new Date(),
      validityDays: 30,
      crlUrl: 'https://x/crl',
      ocspUrl: 'https://x/ocsp',
      kind: 'device',
    });
    if (!issued.ok) throw issued.error;
    const der = issued.value.der;
    expect(identityFields(der)).toEqual(nodeView(der));
    expect(identityFields(der)).toMatchObject({
      serial: issued.value.serial,
      commonNames: ['sensor-7'],
      sanUris: ['urn:fleetgate:device:sensor-7'],
    });
  });

  it('refuses what is not strict DER, without throwing', async () => {
    const ca = await createTestCa();
    const der = new Uint8Array(ca.issuingCert.rawData);
    expect(identityFields(der)).not.toBeNull();
    expect(identityFields(der.subarray(0, der.length - 1))).toBeNull(); // truncated
    expect(identityFields(new Uint8Array([...der, 0]))).toBeNull(); // trailing byte
    expect(identityFields(new Uint8Array(0))).toBeNull();
    expect(identityFields(new Uint8Array([0x30, 0x80, 0, 0]))).toBeNull(); // indefinite length
    for (let i = 0; i < 300; i++) {
      // random corruption: null or fields, never an exception
      const copy = new Uint8Array(der);
      const at = (i * 7919) % copy.length;
      copy[at] = (copy[at] ?? 0) ^ 0xff;
      expect(() => identityFields(copy)).not.toThrow();
    }
  });
});
