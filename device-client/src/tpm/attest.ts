/**
 * The device side of fleetgate's TPM attestation (docs/attestation.md), with tpm2-tools:
 *
 *   1. EK certificate from NV (TCG EK Credential Profile 2.2.1.5: 0x01C00002 RSA 2048,
 *      0x01C0000A ECC NIST P-256) and the EK itself from the TCG default template (tpm2_createek).
 *   2. A fresh attestation key under the EK (tpm2_createak: restricted ECDSA P-256 signing key,
 *      fixedTPM | fixedParent | sensitiveDataOrigin).
 *   3. The server's TPM2_MakeCredential challenge, opened with TPM2_ActivateCredential under the
 *      EK's policy (PolicySecret on the endorsement hierarchy, TCG EK profile 2.1.5): only the TPM
 *      holding both the EK and the AK recovers the secret. The secret buys a nonce.
 *   4. TPM2_Certify of the device key by the AK with qualifyingData = nonce (Part 3 18.2).
 *
 * The result is the Tpm2CertifyStatement the CSR carries. `collectTpmEvidence` takes the server
 * exchange as an interface so that renewal can call it with a re-enrollment exchange (mTLS with
 * the current certificate) instead of the enrollment one (Basic with the factory token).
 *
 * TPM2_Certify goes through tpm2_send with persistent handles because tpm2-tools has no option for
 * qualifyingData, and a resource manager (tpm2-abrmd, /dev/tpmrm0) flushes transient objects when
 * the process that loaded them exits: the key and the AK are made persistent for the one command
 * and evicted again whatever happens.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TpmError } from '../errors.js';
import { certifyCommand, parseCertifyResponse } from './certify-command.js';
import type { TpmTools } from './tools.js';

/** What the device sends to POST /.well-known/est/attest/challenge (raw bytes; base64 on the wire). */
export interface AttestationChallengeRequest {
  /** DER EK certificate. */
  ekCert: Buffer;
  /** TPM2B_PUBLIC of the EK. */
  ekPublic: Buffer;
  /** TPM2B_PUBLIC of the AK. */
  akPublic: Buffer;
}

export interface AttestationChallenge {
  challengeId: string;
  /** The credential in tpm2-tools' file format (what tpm2_activatecredential -i reads). */
  credentialFile: Buffer;
}

/**
 * The two server round trips of attestation. Enrollment authenticates them with the factory token
 * (EstClient.attestationExchange); a renewal would authenticate them with the current certificate.
 */
export interface AttestationExchange {
  challenge(request: AttestationChallengeRequest): Promise<AttestationChallenge>;
  /** Sends the activated secret; resolves to the nonce for TPM2_Certify. */
  activate(challengeId: string, secret: Buffer): Promise<Buffer>;
}

/** The evidence statement of the CSR attribute (draft-ietf-lamps-csr-attestation shape). */
export interface Tpm2CertifyStatement {
  /** TPM2B_PUBLIC of the certified key. */
  keyPublic: Buffer;
  /** TPMS_ATTEST from TPM2_Certify; extraData = the server's nonce. */
  attest: Buffer;
  /** TPMT_SIGNATURE by the AK. */
  signature: Buffer;
}

/** A key in the TPM as its wrapped blobs under a persistent parent, with its auth value. */
export interface TpmKeyBlobs {
  /** TPM2B_PUBLIC. */
  public: Buffer;
  /** TPM2B_PRIVATE (wrapped by the parent: useless outside this TPM). */
  private: Buffer;
  /** The key's authValue. */
  auth: Uint8Array;
  /** Persistent handle of the parent (the tpm2-pkcs11 store's primary key). */
  parent: number;
}

export type EkType = 'rsa' | 'ecc';

/** TCG EK Credential Profile 2.2.1.5: NV indices of the EK certificates (low range templates). */
export const EK_CERT_NV_INDEX: Record<EkType, number> = { rsa: 0x01c00002, ecc: 0x01c0000a };

export interface CollectEvidenceOptions {
  /** A private (0700) directory for the tool files of this run; the caller removes it. */
  workDir: string;
  /** Which EK (default rsa: every TPM 2.0 has the RSA 2048 EK certificate; ECC is optional). */
  ek?: EkType;
  /** First persistent handle tried for the temporary copies (default 0x8100F000, owner range). */
  scratchHandleBase?: number;
  /** Called as each step starts (progress output; the step names of TpmError). */
  onStep?: ((step: AttestationStep) => void) | undefined;
}

export type AttestationStep =
  | 'export-key'
  | 'ek-certificate'
  | 'ek'
  | 'ak'
  | 'challenge'
  | 'activate-credential'
  | 'activate'
  | 'load-key'
  | 'persist'
  | 'certify';

const hex = (n: number) => `0x${n.toString(16)}`;

/** Handles listed by `tpm2_getcap handles-*` (YAML lines `- 0x81000001`). */
function parseHandles(yaml: Buffer): Set<number> {
  const out = new Set<number>();
  for (const m of yaml.toString('utf8').matchAll(/^-\s*0x([0-9a-fA-F]{1,8})\s*$/gm))
    out.add(Number.parseInt(m[1]!, 16));
  return out;
}

/**
 * The DER certificate at the start of an NV read: TPMs size the index for the largest
 * certificate and may pad it (with 0x00 or 0xFF), so the bytes after the outer SEQUENCE go.
 */
export function trimDer(bytes: Buffer): Buffer {
  if (bytes.length < 2 || bytes[0] !== 0x30) return bytes;
  const first = bytes[1] as number;
  let len: number;
  let head: number;
  if (first < 0x80) {
    len = first;
    head = 2;
  } else {
    const n = first & 0x7f;
    if (n < 1 || n > 3 || bytes.length < 2 + n) return bytes;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (bytes[2 + i] as number);
    head = 2 + n;
  }
  return head + len <= bytes.length ? bytes.subarray(0, head + len) : bytes;
}

/** One attestation at a time per TCTI in this process: the scratch handles would collide. */
const queues = new Map<string, Promise<unknown>>();

function serialized<T>(key: string, work: () => Promise<T>): Promise<T> {
  const before = queues.get(key) ?? Promise.resolve();
  const run = before.then(work, work);
  const tail = run.catch(() => undefined);
  queues.set(key, tail);
  void tail.then(() => {
    if (queues.get(key) === tail) queues.delete(key);
  });
  return run;
}

/**
 * Runs steps 1-4 for `key` (its blobs, or a function that produces them, called in this
 * attestation's turn) and returns the statement for the CSR. Each failure is a TpmError
 * naming its step (ek-certificate, ek, ak, activate-credential, load-key, persist, certify) or the
 * server's refusal (an EnrollmentError with the server's code) from `exchange`.
 */
export function collectTpmEvidence(
  tools: TpmTools,
  key: TpmKeyBlobs | (() => Promise<TpmKeyBlobs>),
  exchange: AttestationExchange,
  options: CollectEvidenceOptions,
): Promise<Tpm2CertifyStatement> {
  // `key` as a function runs inside the same turn (the TPM key store exports the blobs there:
  // tpm2_ptool unseals the auth value through the TPM, and its store is shared with the token).
  return serialized(tools.options.tcti ?? process.env.TPM2TOOLS_TCTI ?? '', async () =>
    collect(tools, typeof key === 'function' ? await key() : key, exchange, options),
  );
}

async function collect(
  tools: TpmTools,
  key: TpmKeyBlobs,
  exchange: AttestationExchange,
  options: CollectEvidenceOptions,
): Promise<Tpm2CertifyStatement> {
  const cwd = options.workDir;
  const ek = options.ek ?? 'rsa';
  const run = (step: string, cmd: string, ...args: string[]) => tools.run(step, cmd, args, { cwd });
  const file = (name: string) => fs.readFile(path.join(cwd, name));
  const step = (name: AttestationStep) => options.onStep?.(name);

  // 1. EK certificate: a missing index is the manufacturer's omission, not a tool failure.
  step('ek-certificate');
  const nvIndex = EK_CERT_NV_INDEX[ek];
  const indices = parseHandles(await run('ek-certificate', 'tpm2_getcap', 'handles-nv-index'));
  if (!indices.has(nvIndex))
    throw new TpmError(
      'TPM_EK_CERT_MISSING',
      'ek-certificate',
      `the TPM has no ${ek.toUpperCase()} EK certificate at NV index ${hex(nvIndex)} (not provisioned by its manufacturer${ek === 'rsa' ? '' : ', or only an RSA EK certificate'}): it cannot be attested`,
    );
  await run('ek-certificate', 'tpm2_nvread', hex(nvIndex), '-C', 'o', '-o', 'ek.crt');
  const ekCert = trimDer(await file('ek.crt'));
  if (ekCert.length < 16 || ekCert[0] !== 0x30)
    throw new TpmError(
      'TPM_EK_CERT_MISSING',
      'ek-certificate',
      `NV index ${hex(nvIndex)} does not hold a DER certificate`,
    );

  // 2. EK (TCG default template, so its key is the certificate's) and a fresh AK under it.
  step('ek');
  await run('ek', 'tpm2_createek', '-c', 'ek.ctx', '-G', ek, '-u', 'ek.pub');
  step('ak');
  await run(
    'ak',
    'tpm2_createak',
    '-C',
    'ek.ctx',
    '-c',
    'ak.ctx',
    '-G',
    'ecc',
    '-g',
    'sha256',
    '-s',
    'ecdsa',
    '-u',
    'ak.pub',
  );
  const ekPublic = await file('ek.pub');
  const akPublic = await file('ak.pub');

  // 3. Challenge, TPM2_ActivateCredential under the EK policy, nonce.
  step('challenge');
  const challenge = await exchange.challenge({ ekCert, ekPublic, akPublic });
  step('activate-credential');
  await fs.writeFile(path.join(cwd, 'cred.bin'), challenge.credentialFile, { mode: 0o600 });
  await run('activate-credential', 'tpm2_startauthsession', '--policy-session', '-S', 'ek-session.ctx');
  try {
    await run('activate-credential', 'tpm2_policysecret', '-S', 'ek-session.ctx', '-c', 'e');
    await run(
      'activate-credential',
      'tpm2_activatecredential',
      '-c',
      'ak.ctx',
      '-C',
      'ek.ctx',
      '-i',
      'cred.bin',
      '-o',
      'secret.bin',
      '-P',
      'session:ek-session.ctx',
    );
  } finally {
    await run('activate-credential', 'tpm2_flushcontext', 'ek-session.ctx').catch(() => undefined);
  }
  step('activate');
  const nonce = await exchange.activate(challenge.challengeId, await file('secret.bin'));

  // 4. TPM2_Certify of the device key by the AK, both persistent for the one command.
  step('load-key');
  await fs.writeFile(path.join(cwd, 'key.pub'), key.public, { mode: 0o600 });
  await fs.writeFile(path.join(cwd, 'key.priv'), key.private, { mode: 0o600 });
  await run('load-key', 'tpm2_load', '-C', hex(key.parent), '-u', 'key.pub', '-r', 'key.priv', '-c', 'key.ctx');
  step('persist');
  const taken = parseHandles(await run('persist', 'tpm2_getcap', 'handles-persistent'));
  const free: number[] = [];
  for (let h = options.scratchHandleBase ?? 0x8100f000; free.length < 2 && h <= 0x8100ffff; h++)
    if (!taken.has(h)) free.push(h);
  const [keyHandle, akHandle] = free;
  if (keyHandle === undefined || akHandle === undefined)
    throw new TpmError('TPM_ERROR', 'persist', 'no free persistent handle in 0x8100F000..0x8100FFFF');
  const persisted: number[] = [];
  try {
    await run('persist', 'tpm2_evictcontrol', '-C', 'o', '-c', 'key.ctx', hex(keyHandle));
    persisted.push(keyHandle);
    await run('persist', 'tpm2_evictcontrol', '-C', 'o', '-c', 'ak.ctx', hex(akHandle));
    persisted.push(akHandle);
    step('certify');
    const rsp = await tools.run('certify', 'tpm2_send', [], {
      cwd,
      input: certifyCommand(keyHandle, key.auth, akHandle, nonce),
    });
    return { keyPublic: key.public, ...parseCertifyResponse(rsp) };
  } finally {
    for (const h of persisted)
      await run('persist', 'tpm2_evictcontrol', '-C', 'o', '-c', hex(h)).catch(() => undefined);
  }
}
