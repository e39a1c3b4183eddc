/**
 * TPM2_Certify as raw command bytes for tpm2_send. tpm2_certify (tpm2-tools 5.4) has no option
 * for qualifyingData, and the server's nonce must be exactly that field (TPM 2.0 Part 3 18.2: it
 * becomes TPMS_ATTEST.extraData), so the command is marshalled here (TPM 2.0 Part 1 18, Part 2
 * big-endian structures) with two password sessions (Part 1 19.6.8): the certified key's auth,
 * then the AK's (empty).
 */
import { TpmError } from '../errors.js';

const TPM_ST_SESSIONS = 0x8002;
const TPM_CC_CERTIFY = 0x00000148;
const TPM_RS_PW = 0x40000009;
const TPM_ALG_NULL = 0x0010;

/** TPMS_AUTH_COMMAND of a password session: handle, empty nonce, attributes 0, hmac = password. */
function passwordSession(password: Uint8Array): Buffer {
  const b = Buffer.alloc(4 + 2 + 1 + 2 + password.length);
  b.writeUInt32BE(TPM_RS_PW, 0);
  b.writeUInt16BE(0, 4);
  b.writeUInt8(0, 6);
  b.writeUInt16BE(password.length, 7);
  Buffer.from(password).copy(b, 9);
  return b;
}

/**
 * The TPM2_Certify command: objectHandle = `key` (auth `keyAuth`), signHandle = `ak` (empty auth),
 * qualifyingData = `nonce`, inScheme TPM_ALG_NULL (the AK's own scheme, which the server checks).
 */
export function certifyCommand(key: number, keyAuth: Uint8Array, ak: number, nonce: Uint8Array): Buffer {
  if (nonce.length > 64) throw new TpmError('TPM_ERROR', 'certify', `the nonce is ${nonce.length} bytes (at most 64)`);
  if (keyAuth.length > 64) throw new TpmError('TPM_ERROR', 'certify', 'the key auth value is over 64 bytes');
  const handles = Buffer.alloc(8);
  handles.writeUInt32BE(key >>> 0, 0);
  handles.writeUInt32BE(ak >>> 0, 4);
  const sessions = Buffer.concat([passwordSession(keyAuth), passwordSession(new Uint8Array(0))]);
  const authSize = Buffer.alloc(4);
  authSize.writeUInt32BE(sessions.length);
  const qd = Buffer.alloc(2);
  qd.writeUInt16BE(nonce.length);
  const scheme = Buffer.alloc(2);
  scheme.writeUInt16BE(TPM_ALG_NULL);
  const body = Buffer.concat([handles, authSize, sessions, qd, nonce, scheme]);
  const head = Buffer.alloc(10);
  head.writeUInt16BE(TPM_ST_SESSIONS, 0);
  head.writeUInt32BE(10 + body.length, 2);
  head.writeUInt32BE(TPM_CC_CERTIFY, 6);
  return Buffer.concat([head, body]);
}

/**
 * Splits a TPM2_Certify response (tag, size, rc, parameterSize, TPM2B_ATTEST, TPMT_SIGNATURE,
 * session area) into the TPMS_ATTEST and TPMT_SIGNATURE bytes. Every length is checked against
 * the bytes present; a TPM error code is reported in hex (Part 2 6.6, e.g. 0x98e = auth fail).
 */
export function parseCertifyResponse(rsp: Buffer): { attest: Buffer; signature: Buffer } {
  const bad = (why: string) => new TpmError('TPM_ERROR', 'certify', `malformed TPM2_Certify response: ${why}`);
  if (rsp.length < 10) throw bad(`${rsp.length} bytes`);
  const size = rsp.readUInt32BE(2);
  if (size !== rsp.length) throw bad(`header says ${size} bytes, got ${rsp.length}`);
  const rc = rsp.readUInt32BE(6);
  if (rc !== 0) throw new TpmError('TPM_ERROR', 'certify', `TPM2_Certify failed with TPM_RC 0x${rc.toString(16)}`);
  if (rsp.readUInt16BE(0) !== TPM_ST_SESSIONS || rsp.length < 16) throw bad('no parameter area');
  const paramSize = rsp.readUInt32BE(10);
  if (14 + paramSize > rsp.length) throw bad('parameterSize beyond the response');
  const params = rsp.subarray(14, 14 + paramSize);
  const attestSize = params.readUInt16BE(0);
  if (attestSize === 0 || 2 + attestSize >= params.length) throw bad('TPM2B_ATTEST size');
  return {
    attest: Buffer.from(params.subarray(2, 2 + attestSize)),
    signature: Buffer.from(params.subarray(2 + attestSize)),
  };
}
