/**
 * The device client's renewal with TPM evidence without a TPM (docs/attestation.md "Renewal"),
 * against an EST server of the test's own that asks for a TLS client certificate: the attest
 * round trips of a renewal present the current certificate and send no Authorization header at
 * all (any Authorization header, even empty, would select the token flow on the server), the
 * statement the key store returned goes into the simplereenroll CSR, and the server's refusals
 * keep their codes. A TPM failure keeps its TpmError (code and step), removes the key made for
 * the attempt and leaves the credential as it was. After a final answer (ATTESTATION_REQUIRED,
 * TPM_EK_UNTRUSTED, TPM_EK_CERT_MISSING, ...) the automatic renewal asks again only at its
 * backoff's ceiling; the others are retried with the short backoff.
 * The key store is the software one with an `attest` of the test's (the real TPM store is tested
 * against swtpm in test/integration/device-client-tpm-attest-renewal.test.ts).
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import * as x509 from '@peculiar/x509';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type AttestationExchange,
  CredentialStore,
  credentialFrom,
  DeviceClient,
  type DeviceKey,
  EnrollmentError,
  FINAL_RENEWAL_CODES,
  type KeyRef,
  type KeyStore,
  SoftwareKeyStore,
  type Tpm2CertifyStatement,
  TpmError,
} from '../../device-client/src/index.js';
import { csrParts } from '../../server/src/attest/index.js';
import { tempDir } from '../helpers/cli.js';
import { issueTestCert, listenLocal, type TestCa, testServerTls } from '../helpers/test-ca.js';

x509.cryptoProvider.set(webcrypto as never);

const statement: Tpm2CertifyStatement = {
  keyPublic: Buffer.from('00580023000b00050472', 'hex'),
  attest: Buffer.from('ff54434780170022', 'hex'),
  signature: Buffer.from('0018000b0020', 'hex'),
};
const request = { ekCert: Buffer.from('cert'), ekPublic: Buffer.from('ekpub'), akPublic: Buffer.from('akpub') };

/** The software store with an `attest` of the test's; records which keys it removed. */
class AttestingStore implements KeyStore {
  readonly type = 'tpm' as const;
  readonly attests = true;
  readonly inner: SoftwareKeyStore;
  readonly removed: KeyRef[] = [];
  calls = 0;
  constructor(
    dir: string,
    public behave: (key: DeviceKey, exchange: AttestationExchange) => Promise<Tpm2CertifyStatement>,
  ) {
    this.inner = new SoftwareKeyStore(dir);
  }
  attest(key: DeviceKey, exchange: AttestationExchange): Promise<Tpm2CertifyStatement> {
    this.calls++;
    return this.behave(key, exchange);
  }
  generate(hint: { deviceId: string }) {
    return this.inner.generate(hint);
  }
  load(ref: KeyRef) {
    return this.inner.load(ref);
  }
  async remove(ref: KeyRef) {
    this.removed.push(ref);
    await this.inner.remove(ref);
  }
  close() {
    return this.inner.close();
  }
}

describe('renewal with TPM evidence (device client, no TPM)', () => {
  let ca: TestCa;
  let server: https.Server;
  let url: string;
  let answers: Record<string, { status: number; body: string }> = {};
  const seen: { path: string; hasAuthorization: boolean; peer: Buffer | undefined; body: string }[] = [];

  beforeAll(async () => {
    const tls = await testServerTls('renewal test CA');
    ca = tls.ca;
    server = https.createServer(
      {
        cert: tls.cert,
        key: tls.key,
        ca: ca.cert.toString('pem'),
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        let body = '';
        req.on('data', (d) => {
          body += d;
        });
        req.on('end', () => {
          const peer = (req.socket as TLSSocket).getPeerCertificate();
          const path = req.url ?? '';
          seen.push({ path, hasAuthorization: 'authorization' in req.headers, peer: peer?.raw, body });
          const a = answers[path.replace('/.well-known/est/', '')] ?? {
            status: 500,
            body: '{"code":"INTERNAL","message":"unexpected"}',
          };
          res.writeHead(a.status, { 'content-type': 'application/json' });
          res.end(a.body);
        });
      },
    );
    url = await listenLocal(server);
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });
  afterEach(() => {
    vi.useRealTimers();
    seen.length = 0;
    answers = {};
  });

  /** A device with a current credential (software key, certificate of the test CA) and the store. */
  async function device(
    behave: AttestingStore['behave'],
    renewal?: ConstructorParameters<typeof DeviceClient>[0]['renewal'],
  ) {
    const dir = tempDir('fg-dc-renew-unit-');
    const store = new AttestingStore(dir, behave);
    const key = await store.generate({ deviceId: 'dev-r' });
    const cert = await issueTestCert(ca, {
      serialNumber: '0a0b0c',
      subject: 'CN=dev-r',
      publicKey: key.keys.publicKey,
    });
    const credentials = new CredentialStore(dir);
    await credentials.init();
    await credentials.save(credentialFrom('dev-r', cert, [ca.cert], key.ref));
    const client = new DeviceClient({
      deviceId: 'dev-r',
      credentialDir: dir,
      ca: ca.cert.toString('pem'),
      estUrl: url,
      keyStore: store,
      estTimeoutMs: 5_000,
      ...(renewal ? { renewal } : {}),
    });
    return { client, store, key, cert: Buffer.from(cert.rawData), credentials };
  }

  it('attests over mTLS with the current certificate and no Authorization header, and sends the evidence in the CSR', async () => {
    answers = {
      'attest/challenge': {
        status: 200,
        body: JSON.stringify({ challengeId: 'c-1', credentialFile: Buffer.from('cred').toString('base64') }),
      },
      'attest/activate': { status: 200, body: JSON.stringify({ nonce: Buffer.alloc(32, 7).toString('base64') }) },
      // The CA's answer does not matter here: what the client sent does.
      simplereenroll: { status: 403, body: JSON.stringify({ code: 'TPM_SIGNATURE_INVALID', message: 'no' }) },
    };
    let newKey: DeviceKey | undefined;
    const d = await device(async (key, exchange) => {
      newKey = key;
      const c = await exchange.challenge(request);
      expect(c).toEqual({ challengeId: 'c-1', credentialFile: Buffer.from('cred') });
      expect((await exchange.activate(c.challengeId, Buffer.from('secret'))).equals(Buffer.alloc(32, 7))).toBe(true);
      return statement;
    });
    try {
      await expect(d.client.renew()).rejects.toMatchObject({
        code: 'TPM_SIGNATURE_INVALID',
        serverCode: 'TPM_SIGNATURE_INVALID',
        status: 403,
      });
      expect(seen.map((s) => s.path)).toEqual([
        '/.well-known/est/attest/challenge',
        '/.well-known/est/attest/activate',
        '/.well-known/est/simplereenroll',
      ]);
      for (const s of seen) {
        expect(s.hasAuthorization, s.path).toBe(false);
        expect(s.peer?.equals(d.cert), `${s.path}: the current certificate as client certificate`).toBe(true);
      }
      expect(JSON.parse(seen[1]!.body)).toEqual({
        challengeId: 'c-1',
        secret: Buffer.from('secret').toString('base64'),
      });
      // The CSR is signed by the new key and carries the statement, as the server parses it.
      const parts = csrParts(Buffer.from(seen[2]!.body.replace(/\s+/g, ''), 'base64'));
      expect(parts.tpm).toEqual(statement);
      expect(parts.spki.equals(Buffer.from(await newKey!.spki()))).toBe(true);
      // Refused: the new key is gone, the current credential and key are untouched.
      expect(d.store.removed).toEqual([newKey!.ref]);
      expect((await d.client.credential()).key).toEqual(d.key.ref);
      await d.store.load(d.key.ref);
      expect(await d.credentials.loadPending()).toBeUndefined();
    } finally {
      await d.client.close();
    }
  });

  it.each([
    [403, 'ATTESTATION_REQUIRED', 'ATTESTATION_REQUIRED'],
    [403, 'TPM_EK_UNTRUSTED', 'TPM_EK_UNTRUSTED'],
    [400, 'TPM_CHALLENGE_INVALID', 'TPM_CHALLENGE_INVALID'],
    [403, 'CERT_REVOKED', 'DEVICE_REVOKED'],
    [400, 'CERT_INVALID', 'ENROLLMENT_REFUSED'],
  ])('a %i %s at the renewal challenge comes out as %s, nothing else sent', async (status, serverCode, code) => {
    answers = { 'attest/challenge': { status, body: JSON.stringify({ code: serverCode, message: 'no' }) } };
    const d = await device((_key, exchange) => exchange.challenge(request).then(() => statement));
    try {
      await expect(d.client.renew()).rejects.toMatchObject({ code, serverCode, status });
      expect(seen.map((s) => s.path)).toEqual(['/.well-known/est/attest/challenge']);
      expect(d.store.removed).toHaveLength(1);
    } finally {
      await d.client.close();
    }
  });

  const goodChallenge = {
    status: 200,
    body: JSON.stringify({ challengeId: 'c-2', credentialFile: Buffer.from('cred').toString('base64') }),
  };
  it.each([
    ['a challenge answer that is not JSON', { 'attest/challenge': { status: 200, body: '<html>' } }],
    ['a challenge answer that is a JSON array', { 'attest/challenge': { status: 200, body: '[]' } }],
    [
      'a 5000-byte credential',
      {
        'attest/challenge': {
          status: 200,
          body: JSON.stringify({ challengeId: 'c', credentialFile: Buffer.alloc(5000).toString('base64') }),
        },
      },
    ],
    [
      'a challengeId with a slash',
      { 'attest/challenge': { status: 200, body: JSON.stringify({ challengeId: 'a/b', credentialFile: 'AAAA' }) } },
    ],
    [
      'a 65-byte nonce',
      {
        'attest/challenge': goodChallenge,
        'attest/activate': { status: 200, body: JSON.stringify({ nonce: Buffer.alloc(65).toString('base64') }) },
      },
    ],
    [
      'a nonce that is not base64',
      { 'attest/challenge': goodChallenge, 'attest/activate': { status: 200, body: '{"nonce":"%%%"}' } },
    ],
    ['a 500', { 'attest/challenge': { status: 500, body: '{"code":"INTERNAL","message":"x"}' } }],
  ])(
    "%s during the renewal attestation is SERVER_ERROR; no CSR is sent, the attempt's key is removed",
    async (_what, a) => {
      answers = a;
      const d = await device(async (_key, exchange) => {
        const c = await exchange.challenge(request);
        await exchange.activate(c.challengeId, Buffer.from('secret'));
        return statement;
      });
      try {
        await expect(d.client.renew()).rejects.toMatchObject({ code: 'SERVER_ERROR' });
        expect(seen.map((s) => s.path)).not.toContain('/.well-known/est/simplereenroll');
        expect(d.store.removed).toHaveLength(1);
        expect((await d.client.credential()).key).toEqual(d.key.ref);
      } finally {
        await d.client.close();
      }
    },
  );

  it('a TPM failure keeps its TpmError (code, step); the new key is removed, nothing reaches simplereenroll', async () => {
    const failure = new TpmError('TPM_ERROR', 'ak', 'tpm2_createak failed');
    const d = await device(async () => {
      throw failure;
    });
    try {
      await expect(d.client.renew()).rejects.toBe(failure);
      expect(seen).toEqual([]);
      expect(d.store.removed).toHaveLength(1);
      expect(d.store.removed[0]).not.toEqual(d.key.ref);
      expect((await d.client.credential()).key).toEqual(d.key.ref);
    } finally {
      await d.client.close();
    }
  });

  const autoRenew = (c: DeviceClient) => (c as unknown as { autoRenew(): Promise<void> }).autoRenew();

  /** The client's error events as `code:cause`, and promises for the first and the second. */
  function firstTwoErrors(client: DeviceClient) {
    const seen: string[] = [];
    const arrived: (() => void)[] = [];
    const first = new Promise<void>((resolve) => arrived.push(resolve));
    const second = new Promise<void>((resolve) => arrived.push(resolve));
    client.on('error', (e) => {
      seen.push(`${e.code}:${(e.cause as { code?: string } | undefined)?.code}`);
      arrived[seen.length - 1]?.();
    });
    return { seen, first, second };
  }

  /**
   * A device whose every attestation fails with `make()`, its automatic renewal started under
   * fake timers and past its first failure, waiting on its one retry timer.
   */
  async function failingAutoRenewal(make: () => Error, retry: { initialMs: number; maxMs: number }) {
    const d = await device(
      async () => {
        throw make();
      },
      { retry },
    );
    await d.client.renew().catch(() => undefined); // loads the current credential
    d.store.calls = 0;
    const errors = firstTwoErrors(d.client);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    void autoRenew(d.client);
    await errors.first;
    await vi.waitFor(() => expect(vi.getTimerCount()).toBe(1));
    return { ...d, errors };
  }

  it.each([
    ['ATTESTATION_REQUIRED', () => new EnrollmentError('ATTESTATION_REQUIRED', 403, 'ATTESTATION_REQUIRED', 'no')],
    ['TPM_EK_UNTRUSTED', () => new EnrollmentError('TPM_EK_UNTRUSTED', 403, 'TPM_EK_UNTRUSTED', 'no')],
    ['TPM_KEY_NOT_RESIDENT', () => new EnrollmentError('TPM_KEY_NOT_RESIDENT', 403, 'TPM_KEY_NOT_RESIDENT', 'no')],
    ['TPM_EK_CERT_MISSING', () => new TpmError('TPM_EK_CERT_MISSING', 'ek-certificate', 'no EK certificate')],
    ['TPM_TOOLS_MISSING', () => new TpmError('TPM_TOOLS_MISSING', 'ak', 'tpm2_createak not found')],
  ])(
    'after a final %s the automatic renewal asks again only at the backoff ceiling, not with its short backoff',
    async (code, make) => {
      // initial 1 s: a retry with the short backoff would come within 1 s. Ceiling 10 s, jitter 0.5:
      // the final answer is asked again 5-10 s later (an operator may have acted by then).
      expect(FINAL_RENEWAL_CODES.has(code)).toBe(true);
      const d = await failingAutoRenewal(make, { initialMs: 1_000, maxMs: 10_000 });
      const { errors } = d;
      try {
        await vi.advanceTimersByTimeAsync(4_500);
        expect(d.store.calls).toBe(1);
        expect(errors.seen).toEqual([`RENEWAL_FAILED:${code}`]);
        await vi.advanceTimersByTimeAsync(6_000);
        await errors.second;
        expect(d.store.calls).toBe(2);
        expect(errors.seen).toEqual([`RENEWAL_FAILED:${code}`, `RENEWAL_FAILED:${code}`]);
      } finally {
        await d.client.close();
      }
    },
  );

  it.each([
    ['TPM_ERROR', () => new TpmError('TPM_ERROR', 'activate-credential', 'TPM_RC 0x902')],
    [
      'TPM_CHALLENGE_INVALID',
      () => new EnrollmentError('TPM_CHALLENGE_INVALID', 400, 'TPM_CHALLENGE_INVALID', 'expired'),
    ],
    ['TPM_ACTIVATION_FAILED', () => new EnrollmentError('TPM_ACTIVATION_FAILED', 403, 'TPM_ACTIVATION_FAILED', 'no')],
  ])('the automatic renewal retries after %s', async (code, make) => {
    expect(FINAL_RENEWAL_CODES.has(code)).toBe(false);
    const d = await failingAutoRenewal(make, { initialMs: 1_000, maxMs: 1_000 });
    const { errors } = d;
    try {
      // Waiting to try again: the backoff timer is the one pending.
      await vi.advanceTimersByTimeAsync(1_500);
      await errors.second;
      expect(errors.seen).toEqual([`RENEWAL_FAILED:${code}`, `RENEWAL_FAILED:${code}`]);
      expect(d.store.calls).toBe(2);
    } finally {
      await d.client.close();
    }
  });
});
