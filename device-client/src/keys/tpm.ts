/**
 * TPM 2.0 key store with attestation: the device key is made in the TPM through tpm2-pkcs11 (the
 * PKCS#11 store below: CSR signing through the token, TLS through OpenSSL's pkcs11 engine, exactly
 * the same key), and `attest` proves to the server that this key lives in a TPM whose EK a known
 * manufacturer certified (../tpm/attest.ts).
 *
 * Why the key is generated through PKCS#11 and not with tpm2_create + `tpm2_ptool link`:
 * tpm2-pkcs11 reads its store's objects at C_Initialize, once per process, so a key linked by
 * tpm2_ptool afterwards is invisible to a process that already uses the token (measured with
 * tpm2-pkcs11 1.9: PKCS11_KEY_NOT_FOUND until a restart), which breaks renewal and any fleet in one
 * process. A key made by C_GenerateKeyPair is visible at once; tpm2-pkcs11 makes it in the TPM
 * under the store's primary key with fixedTPM | fixedParent | sensitiveDataOrigin (it is
 * non-extractable), and `tpm2_ptool export --format tpm2` hands back its wrapped blobs and auth
 * value (unwrapped with the user PIN) so that TPM2_Certify can be run on it.
 *
 * The store's primary key must be persistent (`tpm2_ptool init`, default, or
 * `--primary-handle`); a store made with `--transient-parent` is refused with TPM_ERROR.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { DeviceClientError, TpmError } from '../errors.js';
import {
  type AttestationExchange,
  type AttestationStep,
  collectTpmEvidence,
  type EkType,
  type Tpm2CertifyStatement,
  type TpmKeyBlobs,
} from '../tpm/attest.js';
import { TpmTools } from '../tpm/tools.js';
import { Pkcs11KeyStore, type Pkcs11KeyStoreOptions, parsePkcs11Uri } from './pkcs11.js';
import type { DeviceKey, KeyRef, KeyStore } from './types.js';

export interface TpmKeyStoreOptions extends Pkcs11KeyStoreOptions {
  /**
   * Attest every new key at enrollment (EK certificate, credential activation, TPM2_Certify).
   * Default true: without it this is the plain pkcs11 store over tpm2-pkcs11.
   */
  attest?: boolean;
  /**
   * TCTI of the TPM for tpm2-tools, tpm2_ptool and (when the process has none) tpm2-pkcs11:
   * `tabrmd:bus_type=session`, `device:/dev/tpmrm0`, `swtpm:port=2321`. Default: the
   * environment's TPM2TOOLS_TCTI / TPM2_PKCS11_TCTI.
   */
  tcti?: string;
  /** tpm2-pkcs11 store directory (TPM2_PKCS11_STORE); default: the environment's. */
  store?: string;
  /** Which EK certificate to use (default rsa; ecc reads NV 0x01C0000A). */
  ek?: EkType;
  /** Extra environment for the TPM tools (e.g. DBUS_SESSION_BUS_ADDRESS of a session abrmd). */
  toolsEnv?: Record<string, string>;
  /** Where the per-attestation 0700 work directory is made (default the OS temp dir); always removed. */
  workDir?: string;
  /** Called as each attestation step starts (progress output). */
  onStep?: (step: AttestationStep, deviceKeyLabel: string) => void;
}

/** `object-auth: <value>` from tpm2_ptool export's YAML. */
function objectAuth(stdout: Buffer): string {
  const m = /^object-auth:\s*'?([^'\s]*)'?\s*$/m.exec(stdout.toString('utf8'));
  if (!m) throw new TpmError('TPM_ERROR', 'export-key', 'tpm2_ptool export printed no object-auth');
  return m[1] ?? '';
}

/**
 * The persistent handle in a serialized ESYS_TR (tpm2_ptool export's `.tr`): tpm2-tss's
 * Esys_TR_Serialize starts with the TPM2_HANDLE, big endian.
 */
function persistentHandle(tr: Buffer): number {
  const h = tr.length >= 4 ? tr.readUInt32BE(0) : 0;
  if (h >>> 24 !== 0x81)
    throw new TpmError(
      'TPM_ERROR',
      'export-key',
      `the token's primary key is not persistent (handle 0x${h.toString(16)})`,
    );
  return h;
}

export class TpmKeyStore implements KeyStore {
  readonly type = 'tpm' as const;
  private readonly p11: Pkcs11KeyStore;
  private readonly tools: TpmTools;
  readonly #pin: string;

  constructor(private readonly opts: TpmKeyStoreOptions) {
    const { attest: _a, tcti, store, ek, toolsEnv: _e, workDir: _w, onStep: _s, ...p11 } = opts;
    if (ek !== undefined && ek !== 'rsa' && ek !== 'ecc')
      throw new DeviceClientError('INVALID_OPTIONS', `keyStore.ek must be rsa or ecc, got ${String(ek)}`);
    // tpm2-pkcs11 runs inside this process and reads its TCTI and store from the environment at
    // C_Initialize: give it the configured ones unless the process already chose others.
    for (const [name, value] of [
      ['TPM2_PKCS11_TCTI', tcti],
      ['TPM2_PKCS11_STORE', store],
    ] as const) {
      if (value === undefined) continue;
      const current = process.env[name];
      if (current === undefined || current === '') process.env[name] = value;
      else if (current !== value)
        throw new DeviceClientError(
          'INVALID_OPTIONS',
          `${name} is ${current} in this process but the TPM key store is configured with ${value}: tpm2-pkcs11 uses one per process`,
        );
    }
    this.p11 = new Pkcs11KeyStore(p11);
    this.#pin = opts.pin;
    this.tools = new TpmTools({ tcti, store, env: opts.toolsEnv });
  }

  [inspect.custom](): string {
    return `TpmKeyStore(${this.opts.module}, token=${this.opts.token}, attest=${this.opts.attest !== false})`;
  }
  toJSON(): object {
    return { type: this.type, module: this.opts.module, token: this.opts.token, attest: this.opts.attest !== false };
  }

  /** A new P-256 key in the TPM, through tpm2-pkcs11 (non-extractable). */
  generate(hint: { deviceId: string }): Promise<DeviceKey> {
    return this.p11.generate(hint);
  }
  load(ref: KeyRef): Promise<DeviceKey> {
    return this.p11.load(ref);
  }
  remove(ref: KeyRef): Promise<void> {
    return this.p11.remove(ref);
  }
  close(): Promise<void> {
    return this.p11.close();
  }
  isExtractable(ref: KeyRef): Promise<boolean> {
    return this.p11.isExtractable(ref);
  }

  /** Whether enrollment attests keys of this store. */
  get attests(): boolean {
    return this.opts.attest !== false;
  }

  /**
   * Evidence that `key` (made by generate()) lives in this TPM, bound to the nonce the server
   * hands out through `exchange`. Usable for enrollment and, once the server takes evidence at
   * re-enrollment, for renewal.
   */
  async attest(key: DeviceKey, exchange: AttestationExchange): Promise<Tpm2CertifyStatement> {
    if (key.ref.type !== 'pkcs11') throw new TpmError('TPM_ERROR', 'export-key', 'not a TPM key');
    const label = parsePkcs11Uri(key.ref.uri).object;
    if (!label) throw new TpmError('TPM_ERROR', 'export-key', 'the key reference names no object');
    const workDir = await fs.mkdtemp(path.join(this.opts.workDir ?? os.tmpdir(), 'fleetgate-tpm-'));
    try {
      await fs.chmod(workDir, 0o700);
      const onStep = this.opts.onStep;
      const blobs = () => {
        onStep?.('export-key', label);
        return this.exportBlobs(label, workDir);
      };
      return await collectTpmEvidence(this.tools, blobs, exchange, {
        workDir,
        ek: this.opts.ek ?? 'rsa',
        onStep: onStep && ((s) => onStep(s, label)),
      });
    } finally {
      await fs.rm(workDir, { recursive: true, force: true });
    }
  }

  /** The key's TPM blobs and auth value from the tpm2-pkcs11 store (the PIN unwraps the auth). */
  private async exportBlobs(label: string, workDir: string): Promise<TpmKeyBlobs> {
    const stdout = await this.tools.run(
      'export-key',
      'tpm2_ptool',
      [
        'export',
        '--format',
        'tpm2',
        '--label',
        this.opts.token,
        '--key-label',
        label,
        '--userpin',
        this.#pin,
        '--output-prefix',
        path.join(workDir, 'export'),
      ],
      { cwd: workDir, secrets: [this.#pin] },
    );
    const auth = objectAuth(stdout);
    const read = (ext: string) => fs.readFile(path.join(workDir, `export.${ext}`));
    const parent = persistentHandle(await read('tr').catch(() => Buffer.alloc(0)));
    return { public: await read('pub'), private: await read('priv'), auth: Buffer.from(auth, 'utf8'), parent };
  }
}
