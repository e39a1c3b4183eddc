/**
 * Device keys in a swtpm for the renewal tests: ECC P-256 keys made in the TPM under its SRK
 * (`srk.ctx`, made by createAttestKeys), persistent at a handle, with their TPM2B_PUBLIC
 * (`<name>.pub`) and DER SubjectPublicKeyInfo (`<name>.spki`); and PKCS#10 requests signed by such
 * a key inside the TPM (tpm2_sign over the SHA-256 of the CertificationRequestInfo, RFC 2986 4.2),
 * optionally carrying TPM2_Certify evidence as the CSR attribute (docs/attestation.md).
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as asn1js from 'asn1js';
import { ATTR_EVIDENCE, evidenceAttributeValue, type Tpm2CertifyStatement } from '../../server/src/attest/index.js';
import { readTpmFile as read, type SoftTpm, tpmTool as t } from './swtpm.js';

export interface TpmKey {
  name: string;
  handle: number;
}

/** A key made in `tpm` (sensitiveDataOrigin, fixedTPM, fixedParent), persistent at `handle`. */
export function makeTpmKey(tpm: SoftTpm, name: string, handle: number): TpmKey {
  t(tpm, 'tpm2_create', '-C', 'srk.ctx', '-G', 'ecc256:ecdsa-sha256', '-u', `${name}.pub`, '-r', `${name}.priv`);
  t(tpm, 'tpm2_load', '-C', 'srk.ctx', '-u', `${name}.pub`, '-r', `${name}.priv`, '-c', `${name}.ctx`);
  const h = `0x${handle.toString(16)}`;
  t(tpm, 'tpm2_evictcontrol', '-C', 'o', '-c', `${name}.ctx`, h);
  t(tpm, 'tpm2_readpublic', '-c', h, '-f', 'der', '-o', `${name}.spki`);
  return { name, handle };
}

/** TPM2_Certify of `key` by the AK at `akHandle` with qualifying data `nonce`: the CSR's statement. */
export function certifyStatement(tpm: SoftTpm, key: TpmKey, akHandle: number, nonce: Uint8Array): Tpm2CertifyStatement {
  return { keyPublic: read(tpm, `${key.name}.pub`), ...tpm.certify(key.handle, akHandle, nonce) };
}

/** A PKCS#10 request for `cn` whose key is `key`, signed in the TPM, with `statement` as evidence if given. */
export function tpmCsr(tpm: SoftTpm, cn: string, key: TpmKey, statement?: Tpm2CertifyStatement): Buffer {
  const oid = (v: string) => new asn1js.ObjectIdentifier({ value: v });
  const attrs = statement
    ? [
        new asn1js.Sequence({
          value: [oid(ATTR_EVIDENCE), new asn1js.Set({ value: [evidenceAttributeValue(statement)] })],
        }),
      ]
    : [];
  const subject = new asn1js.Sequence({
    value: [
      new asn1js.Set({
        value: [new asn1js.Sequence({ value: [oid('2.5.4.3'), new asn1js.Utf8String({ value: cn })] })],
      }),
    ],
  });
  const info = new asn1js.Sequence({
    value: [
      new asn1js.Integer({ value: 0 }),
      subject,
      asn1js.fromBER(new Uint8Array(read(tpm, `${key.name}.spki`))).result,
      new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 0 }, value: attrs }),
    ],
  });
  const infoDer = Buffer.from(info.toBER(false));
  const base = `csr-${cn}-${key.name}`;
  writeFileSync(path.join(tpm.dir, `${base}.digest`), createHash('sha256').update(infoDer).digest());
  const h = `0x${key.handle.toString(16)}`;
  t(
    tpm,
    'tpm2_sign',
    '-c',
    h,
    '-g',
    'sha256',
    '-s',
    'ecdsa',
    '-d',
    '-f',
    'plain',
    '-o',
    `${base}.sig`,
    `${base}.digest`,
  );
  const csr = new asn1js.Sequence({
    value: [
      asn1js.fromBER(new Uint8Array(infoDer)).result,
      new asn1js.Sequence({ value: [oid('1.2.840.10045.4.3.2')] }),
      new asn1js.BitString({ valueHex: new Uint8Array(read(tpm, `${base}.sig`)) }),
    ],
  });
  return Buffer.from(csr.toBER(false));
}
