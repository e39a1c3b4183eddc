/**
 * Where the issuing CA key of a test CA lives: the key backend fixture. `file` is today's CA
 * (PKCS#8 keys loaded into WebCrypto); `pkcs11` generates root and issuing keys inside a fresh
 * SoftHSM2 token (CKA_SENSITIVE, CKA_EXTRACTABLE=false) through the server's own PKCS#11 code
 * (server/src/hsm/), so every signature the CA makes goes through the token.
 *
 * The provisioning harness (./provisioning.ts) and the suites built on it run once per backend.
 * SoftHSM2 missing: the pkcs11 backend is skipped loudly, or fails the run under
 * FLEETGATE_REQUIRE_SYSTEM_TOOLS=1 (./system-tools.ts).
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  type CertificateAuthority,
  createSignerCaHierarchy,
  loadCertificateAuthority,
} from '../../server/src/ca/index.js';
import { openPkcs11Token, type Pkcs11Token } from '../../server/src/hsm/pkcs11-signer.js';
import { createTestCa } from './ca.js';
import { tempDir } from './cli.js';
import { createSoftHsmToken, type SoftHsmToken, softhsmModule } from './softhsm.js';
import { requireTool } from './system-tools.js';

export interface TestCaKey {
  ca: CertificateAuthority;
  /** The token and the issuing key's object (pkcs11 only). */
  token?: { softhsm: SoftHsmToken; issuing: Pkcs11Token; pinFile: string; object: string };
  close(): void;
}

export interface CaKeyBackend {
  name: 'file' | 'pkcs11';
  createCa(): Promise<TestCaKey>;
}

export const fileCaKey: CaKeyBackend = {
  name: 'file',
  async createCa() {
    return { ca: await createTestCa(), close: () => undefined };
  },
};

/** A fresh SoftHSM2 token and its PIN file. */
export function softHsmWithPinFile(): { softhsm: SoftHsmToken; pinFile: string } {
  const softhsm = createSoftHsmToken(`fg-ca-${randomBytes(4).toString('hex')}`);
  const pinFile = path.join(tempDir('fg-pin-'), 'pin');
  writeFileSync(pinFile, `${softhsm.pin}\n`, { mode: 0o600 });
  return { softhsm, pinFile };
}

/**
 * One token per test process: SoftHSM2 reads its token directory at C_Initialize, so a token
 * initialised afterwards (by softhsm2-util) is not seen by this process. Each CA gets its own
 * key objects in it.
 */
let shared: { softhsm: SoftHsmToken; pinFile: string } | undefined;

export const pkcs11CaKey: CaKeyBackend = {
  name: 'pkcs11',
  async createCa() {
    shared ??= softHsmWithPinFile();
    const { softhsm, pinFile } = shared;
    const object = `issuing-ca-${randomBytes(4).toString('hex')}`;
    const open = (obj: string) =>
      openPkcs11Token({ module: softhsm.module, pinFile, uri: { token: softhsm.token, object: obj } });
    const root = await open(`${object}-root`);
    const issuing = await open(object);
    const rootSpki = await root.generateKeyPair('P-256');
    const issuingSpki = await issuing.generateKeyPair('P-256');
    const material = await createSignerCaHierarchy({
      algorithm: 'P-256',
      now: new Date(),
      rootSigner: root.signer(),
      rootSpki,
      issuingSpki,
    });
    root.close();
    const loaded = await loadCertificateAuthority({
      root: { certPem: material.root.certPem },
      issuing: { certPem: material.issuing.certPem, signer: issuing.signer() },
    });
    if (!loaded.ok) throw loaded.error;
    return {
      ca: loaded.value,
      token: { softhsm, issuing, pinFile, object },
      close: () => issuing.close(),
    };
  },
};

let pkcs11Usable: boolean | undefined;

/** file always; pkcs11 when SoftHSM2 is installed (else skipped loudly, or a failure in CI). */
export function caKeyBackends(): CaKeyBackend[] {
  pkcs11Usable ??= requireTool('softhsm2-util') && softhsmModule() !== undefined;
  return pkcs11Usable ? [fileCaKey, pkcs11CaKey] : [fileCaKey];
}
