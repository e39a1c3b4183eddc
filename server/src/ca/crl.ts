/**
 * Full (base) CRLs signed by the issuing CA (RFC 5280 section 5): v2, with the CRL number and
 * authority key identifier extensions and a reasonCode entry extension where there is a reason.
 */

import { FleetgateError } from '../errors.js';
import { isSerialHex } from '../identifiers.js';
import { type CertificateAuthority, internalsOf } from './authority.js';
import { toBytes } from './crypto.js';
import { bigintToDerIntegerContent } from './der.js';
import { signingAlgorithm } from './keys.js';
import { wholeSeconds } from './time.js';
import * as x509 from './x509.js';

export interface RevokedEntry {
  serial: string;
  revokedAt: Date;
  /** RFC 5280 5.3.1 CRLReason; 0 (unspecified) is encoded by omitting the extension. */
  reason: number;
}

const OID_CRL_NUMBER = '2.5.29.20';
/** RFC 5280 5.3.1: 0-6, 8-10; 7 is not used. 8 (removeFromCRL) only belongs in delta CRLs. */
const FULL_CRL_REASONS = new Set([0, 1, 2, 3, 4, 5, 6, 9, 10]);

function bad(message: string): FleetgateError {
  return new FleetgateError('INTERNAL', `cannot build CRL: ${message}`);
}

/** cRLNumber extension (RFC 5280 5.2.3): non-critical, monotonically increasing, <= 20 octets. */
function crlNumberExtension(n: bigint): x509.Extension {
  const content = bigintToDerIntegerContent(n);
  if (content.byteLength > 20) throw bad('CRL number exceeds 20 octets');
  const der = new Uint8Array(2 + content.byteLength);
  der[0] = 0x02;
  der[1] = content.byteLength;
  der.set(content, 2);
  return new x509.Extension(OID_CRL_NUMBER, false, der);
}

/**
 * Returns the DER CRL. Throws FleetgateError INTERNAL for impossible inputs (bad serials, reason 7,
 * duplicate serials, nextUpdate not after thisUpdate): those are bugs upstream, not requests.
 */
export async function buildCrl(
  ca: CertificateAuthority,
  revoked: RevokedEntry[],
  opts: { crlNumber: bigint; thisUpdate: Date; nextUpdate: Date },
): Promise<Uint8Array> {
  if (opts.crlNumber < 0n) throw bad('CRL number must be non-negative');
  const thisUpdate = wholeSeconds(opts.thisUpdate);
  const nextUpdate = wholeSeconds(opts.nextUpdate);
  // RFC 5280 5.1.2.5: nextUpdate is later than thisUpdate (and conforming CAs always include it).
  if (!(nextUpdate.getTime() > thisUpdate.getTime())) throw bad('nextUpdate must be after thisUpdate');
  const seen = new Set<string>();
  const entries: x509.X509CrlEntryParams[] = [];
  for (const r of revoked) {
    const serial = r.serial.toLowerCase();
    if (!isSerialHex(serial)) throw bad('a serial is not lower-case hex');
    if (seen.has(serial)) throw bad(`serial ${serial} listed twice`);
    seen.add(serial);
    if (!FULL_CRL_REASONS.has(r.reason)) throw bad(`reason ${r.reason} is not valid in a full CRL`);
    if (Number.isNaN(r.revokedAt.getTime())) throw bad(`revocation date of ${serial} is invalid`);
    entries.push({
      serialNumber: serial,
      revocationDate: wholeSeconds(r.revokedAt),
      // 5.3.1: "the reason code unspecified (0) SHOULD be absent" - x509 omits a falsy reason.
      ...(r.reason !== 0 ? { reason: r.reason as x509.X509CrlReason } : {}),
    });
  }
  const inner = internalsOf(ca);
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: new x509.Name(inner.issuing.subjectDer),
      thisUpdate,
      nextUpdate,
      signingAlgorithm: signingAlgorithm(ca.algorithm),
      signingKey: inner.signing.key,
      entries,
      extensions: [
        // 5.2.1: AKI MUST be included; keyIdentifier = issuing CA's SKI.
        new x509.AuthorityKeyIdentifierExtension(inner.issuingKeyId, false),
        crlNumberExtension(opts.crlNumber),
      ],
    },
    inner.signing.crypto,
  );
  return toBytes(crl.rawData).slice();
}
