/**
 * The provisioning use cases wired over a real store and a real CA, for each backend: embedded
 * PGlite in a temp dir, and PostgreSQL in a throw-away database (skipped loudly when the server
 * is unreachable, unless FLEETGATE_REQUIRE_SYSTEM_TOOLS=1 makes that a failure); and the CA key
 * as a file or in a SoftHSM2 token (./ca-key.ts): `backends()` pairs PGlite with the token too,
 * so every suite over it (EST, renewal, CRL, OCSP, ...) runs once with each key backend.
 */
import { webcrypto } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { createAudit } from '../../server/src/audit/index.js';
import type { CertificateAuthority } from '../../server/src/ca/index.js';
import { encodePem } from '../../server/src/ca/pem.js';
import { createProvisioning, type ProvisioningObserver } from '../../server/src/enrollment/index.js';
import { createInventory } from '../../server/src/inventory/index.js';
import { createOperators } from '../../server/src/operators/index.js';
import { createRevocation } from '../../server/src/revocation/index.js';
import { openStore } from '../../server/src/store/index.js';
import type { Store } from '../../server/src/store/types.js';
import { makeCsr } from './ca.js';
import { type CaKeyBackend, caKeyBackends, fileCaKey, type TestCaKey } from './ca-key.js';
import { tempDir } from './cli.js';
import { createTestDatabase, postgresAvailable } from './pg.js';

export const URLS = { crlUrl: 'https://fleetgate.test:8443/crl', ocspUrl: 'https://fleetgate.test:8443/ocsp' };
export const OPERATOR = { kind: 'operator', id: 'alice' } as const;

export interface Backend {
  name: 'pglite' | 'postgres' | 'pglite, CA key in PKCS#11';
  /** Where the CA key lives (default: a file). */
  caKey?: CaKeyBackend;
  /** Opens a fresh, empty store; `dispose` closes and deletes it. */
  open(): Promise<{ store: Store; dispose(): Promise<void> }>;
}

export const pgliteBackend: Backend = {
  name: 'pglite',
  async open() {
    // tempDir: removed after the file even if a test never reaches dispose().
    const dir = tempDir('fg-prov-');
    const store = await openStore({ pgliteDir: path.join(dir, 'db') });
    return {
      store,
      async dispose() {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
};

export const postgresBackend: Backend = {
  name: 'postgres',
  async open() {
    const db = await createTestDatabase();
    const store = await openStore({ databaseUrl: db.url });
    return {
      store,
      async dispose() {
        await store.close();
        await db.drop();
      },
    };
  },
};

/** PGlite with the CA key in a SoftHSM2 token (only when SoftHSM2 is installed: see caKeyBackends). */
export function tokenBackends(): Backend[] {
  return caKeyBackends()
    .filter((k) => k.name === 'pkcs11')
    .map((caKey) => ({ ...pgliteBackend, name: 'pglite, CA key in PKCS#11' as const, caKey }));
}

/**
 * Both stores with the CA key in a file, and PGlite with the key in a token; PostgreSQL only
 * when reachable (postgresAvailable warns loudly otherwise).
 */
export async function backends(): Promise<Backend[]> {
  const stores = (await postgresAvailable()) ? [pgliteBackend, postgresBackend] : [pgliteBackend];
  return [...stores, ...tokenBackends()];
}

/** A clock tests can move. */
export class TestClock {
  private offsetMs = 0;
  readonly now = (): Date => new Date(Date.now() + this.offsetMs);
  advance(ms: number): void {
    this.offsetMs += ms;
  }
  reset(): void {
    this.offsetMs = 0;
  }
}

export class RecordingObserver implements ProvisioningObserver {
  enrollments: { kind: string; result: string }[] = [];
  revocations: number[] = [];
  crls: Date[] = [];
  enrollment(kind: 'enroll' | 'reenroll', result: string): void {
    this.enrollments.push({ kind, result });
  }
  revoked(count: number): void {
    this.revocations.push(count);
  }
  crlPublished(thisUpdate: Date): void {
    this.crls.push(thisUpdate);
  }
}

export interface Harness {
  store: Store;
  ca: CertificateAuthority;
  /** The CA and, with a token, the token holding its key. */
  caKey: TestCaKey;
  clock: TestClock;
  observer: RecordingObserver;
  audit: ReturnType<typeof createAudit>;
  provisioning: ReturnType<typeof createProvisioning>;
  revocation: ReturnType<typeof createRevocation>;
  inventory: ReturnType<typeof createInventory>;
  operators: ReturnType<typeof createOperators>;
  /** A provisioning service over the same store with other options. */
  provisioningWith(o: ProvisioningVariant): ReturnType<typeof createProvisioning>;
  close(): Promise<void>;
}

/** Options a test may vary on a second provisioning service over the same store. */
export interface ProvisioningVariant {
  allowKeyReuse?: boolean;
  serviceSelfRenew?: boolean;
  serviceMaxLifetimeMs?: number;
}

export const CERT_VALIDITY_DAYS = 30;
export const TOKEN_TTL_MS = 3_600_000;

export async function openHarness(backend: Backend, opts: { crlValidityMs?: number } = {}): Promise<Harness> {
  const { store, dispose } = await backend.open();
  const caKey = await (backend.caKey ?? fileCaKey).createCa();
  const ca = caKey.ca;
  const clock = new TestClock();
  const observer = new RecordingObserver();
  const audit = createAudit({ store });
  const provisioningWith = (o: ProvisioningVariant) =>
    createProvisioning({
      store,
      ca,
      audit,
      now: clock.now,
      certValidityDays: CERT_VALIDITY_DAYS,
      tokenTtlMs: TOKEN_TTL_MS,
      ...URLS,
      allowKeyReuse: o.allowKeyReuse ?? false,
      serviceSelfRenew: o.serviceSelfRenew,
      serviceMaxLifetimeMs: o.serviceMaxLifetimeMs,
    });
  const revocation = createRevocation({
    store,
    ca,
    audit,
    observer,
    now: clock.now,
    ...(opts.crlValidityMs ? { crlValidityMs: opts.crlValidityMs } : {}),
  });
  return {
    store,
    ca,
    caKey,
    clock,
    observer,
    audit,
    provisioning: provisioningWith({}),
    revocation,
    inventory: createInventory({ store, now: clock.now }),
    operators: createOperators({ store, audit }),
    provisioningWith,
    async close() {
      await revocation.close();
      caKey.close();
      await dispose();
    },
  };
}

/** Expects `p` to reject with a FleetgateError of this code; returns the error. */
export async function rejectsWith(p: Promise<unknown>, code: string): Promise<Error & { code: string }> {
  try {
    await p;
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code !== code) {
      throw new Error(`expected ${code}, got ${err.code ?? 'no code'}: ${err.message}`, { cause: e });
    }
    return err as Error & { code: string };
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

/** A device's TLS credential as PEM, for a TLS or MQTT client. */
export interface DeviceTls {
  id: string;
  key: string;
  cert: string;
}

/** A device enrolled on `h` with a token: an unattested certificate, stored, and its key. */
export async function enrolledTls(h: Harness, id: string): Promise<DeviceTls> {
  const [t] = await h.provisioning.createTokens({ deviceIds: [id] }, { actor: OPERATOR });
  const csr = await makeCsr(id);
  const r = await h.provisioning.enroll({ deviceId: id, token: t!.token, csr: csr.der });
  const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', csr.keys.privateKey));
  return { id, key: encodePem('PRIVATE KEY', pkcs8), cert: r.certificate.pem };
}
