/**
 * The TPM's key derivation functions (TPM 2.0 Part 1, 11.4.10): KDFa, the SP 800-108 counter-mode
 * KDF with HMAC, and KDFe, the SP 800-56A concatenation KDF used to turn an ECDH secret into a
 * seed. Both take a label that is used with its terminating zero octet (Part 1 11.4.10.1: "if the
 * label does not end in 0x00, one is added").
 */
import { createHash, createHmac } from 'node:crypto';
import { u32be } from './bytes.js';
import { TPM_HASHES } from './constants.js';

function labelBytes(label: string): Buffer {
  const b = Buffer.from(label, 'latin1');
  return b.length > 0 && b[b.length - 1] === 0 ? b : Buffer.concat([b, Buffer.alloc(1)]);
}

function hashName(hashAlg: number): string {
  const h = TPM_HASHES.get(hashAlg);
  if (!h) throw new RangeError(`unsupported hash 0x${hashAlg.toString(16)}`);
  return h.node;
}

/** Truncates to `bits`; when bits is not a whole number of bytes the high bits go (Part 1 11.4.10.2). */
function truncate(out: Buffer, bits: number): Buffer {
  const bytes = Math.ceil(bits / 8);
  const r = Buffer.from(out.subarray(0, bytes));
  if (bits % 8 !== 0) r[0]! &= 0xff >> (8 - (bits % 8));
  return r;
}

/** Blocks for counter i = 1, 2, ... until there are `bits`, then truncated (both KDFs iterate this way). */
function counterMode(bits: number, block: (i: number) => Buffer): Buffer {
  const chunks: Buffer[] = [];
  let have = 0;
  for (let i = 1; have * 8 < bits; i++) {
    const b = block(i);
    chunks.push(b);
    have += b.length;
  }
  return truncate(Buffer.concat(chunks), bits);
}

/** KDFa(hashAlg, key, label, contextU, contextV, bits) (Part 1 11.4.10.2). */
export function kdfa(
  hashAlg: number,
  key: Uint8Array,
  label: string,
  contextU: Uint8Array,
  contextV: Uint8Array,
  bits: number,
): Buffer {
  const h = hashName(hashAlg);
  return counterMode(bits, (i) =>
    createHmac(h, key)
      .update(u32be(i))
      .update(labelBytes(label))
      .update(contextU)
      .update(contextV)
      .update(u32be(bits))
      .digest(),
  );
}

/** KDFe(hashAlg, Z, label, partyUInfo, partyVInfo, bits) (Part 1 11.4.10.3). */
export function kdfe(
  hashAlg: number,
  z: Uint8Array,
  label: string,
  partyUInfo: Uint8Array,
  partyVInfo: Uint8Array,
  bits: number,
): Buffer {
  const h = hashName(hashAlg);
  return counterMode(bits, (i) =>
    createHash(h).update(u32be(i)).update(z).update(labelBytes(label)).update(partyUInfo).update(partyVInfo).digest(),
  );
}
