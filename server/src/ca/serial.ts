/**
 * Certificate serial numbers (RFC 5280 section 4.1.2.2: positive INTEGER, unique per CA, at most
 * 20 octets; CAs should make them unpredictable).
 *
 * fleetgate serials are 16 octets from the CSPRNG with the top bit cleared (so the INTEGER is
 * positive and DER needs no 0x00 pad) and the next bit set (so the value never shrinks to fewer
 * octets). That leaves 126 random bits, and every serial has one canonical spelling: 32 lower-case
 * hex digits, identical in the DER, in `openssl x509 -serial`, in Node's getPeerCertificate()
 * (modulo case) and in the store.
 */
import { crypto, toHex } from './crypto.js';

export const SERIAL_OCTETS = 16;

export function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(SERIAL_OCTETS));
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return toHex(bytes);
}

/**
 * Canonical spelling of a serial taken from the wire (INTEGER content octets): lower-case hex,
 * without the 0x00 octet DER adds in front of a value whose top bit is set, and without
 * redundant leading zero octets.
 */
export function canonicalSerialHex(integerContent: Uint8Array): string {
  let i = 0;
  while (i < integerContent.byteLength - 1 && integerContent[i] === 0) i++;
  return toHex(integerContent.subarray(i));
}
