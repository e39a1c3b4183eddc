/**
 * Distinguished names fleetgate writes. Always built from typed JSON with an explicit UTF8String
 * (RFC 5280 section 4.1.2.4: new certificates use PrintableString or UTF8String), never from a
 * DN string: @peculiar/x509's string parser treats "#..." as hex and "\" / "+" / "," as syntax.
 */
import * as x509 from './x509.js';

export function commonNameOnly(cn: string): x509.Name {
  return new x509.Name([{ CN: [{ utf8String: cn }] }]);
}

export function caName(organization: string, commonName: string): x509.Name {
  return new x509.Name([{ O: [{ utf8String: organization }] }, { CN: [{ utf8String: commonName }] }]);
}
