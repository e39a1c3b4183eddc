/**
 * Cached OCSP answers (RFC 5019 6) stay correct: `openssl ocsp` verifies a cached answer, a
 * revocation is seen by the very next answer (through the revoke call on this process, and
 * through the store's change events on another process sharing PostgreSQL), and a request with
 * an RFC 8954 nonce is always signed afresh with its nonce echoed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRevocation, type RevocationService } from '../../server/src/revocation/index.js';
import { openStore } from '../../server/src/store/index.js';
import { makeCsr, ocspRequest, parseOcspResponse } from '../helpers/ca.js';
import { OpensslDir, opensslAvailable } from '../helpers/openssl.js';
import { createTestDatabase, postgresAvailable } from '../helpers/pg.js';
import { backends, type Harness, OPERATOR, openHarness } from '../helpers/provisioning.js';
import { waitFor } from '../helpers/wait.js';

const list = await backends();
const hasOpenssl = opensslAvailable('OCSP cache interop (test/integration/ocsp-cache-revocation.test.ts)');

describe.each(list)('OCSP cache and revocation ($name)', (backend) => {
  let h: Harness;
  let revocation: RevocationService;
  let dir: OpensslDir;

  beforeAll(async () => {
    h = await openHarness(backend);
    revocation = createRevocation({ store: h.store, ca: h.ca, audit: h.audit });
    dir = new OpensslDir();
    dir.write('bundle.pem', h.ca.bundlePem);
    dir.write('issuing.pem', h.ca.issuingCert.toString('pem'));
  });
  afterAll(async () => {
    await revocation?.close();
    await h?.close();
    dir?.cleanup();
  });

  const enroll = async (id: string) => {
    const [t] = await h.provisioning.createTokens({ deviceIds: [id] }, { actor: OPERATOR });
    const r = await h.provisioning.enroll({ deviceId: id, token: t!.token, csr: (await makeCsr(id)).der });
    dir.write(`${id}.pem`, r.certificate.pem);
    return r.certificate;
  };
  const status = (respFile: string, id: string) =>
    dir.run([
      'ocsp',
      '-respin',
      respFile,
      '-CAfile',
      'bundle.pem',
      '-issuer',
      'issuing.pem',
      '-cert',
      `${id}.pem`,
      '-no_nonce',
    ]);

  it.runIf(hasOpenssl)(
    'a cached answer verifies with openssl; the next answer after a revoke says revoked',
    async () => {
      await enroll('oc-1');
      dir.ok(['ocsp', '-issuer', 'issuing.pem', '-cert', 'oc-1.pem', '-no_nonce', '-reqout', 'oc-1-req.der']);
      const req = new Uint8Array(dir.read('oc-1-req.der'));
      const first = await revocation.ocsp(req);
      const cached = await revocation.ocsp(req);
      // Same bytes: served from the cache (a fresh ECDSA signature would differ).
      expect(Buffer.from(cached)).toEqual(Buffer.from(first));
      dir.write('oc-1-cached.der', cached);
      const good = status('oc-1-cached.der', 'oc-1');
      expect(good.status, good.stderr).toBe(0);
      expect(good.stderr).toContain('Response verify OK');
      expect(good.stdout).toMatch(/^oc-1\.pem: good\n/);

      await revocation.revokeDevice('oc-1', 1, OPERATOR);
      dir.write('oc-1-after.der', await revocation.ocsp(req));
      const revoked = status('oc-1-after.der', 'oc-1');
      expect(revoked.status, revoked.stderr).toBe(0);
      expect(revoked.stdout).toMatch(/^oc-1\.pem: revoked\n/);
      expect(revoked.stdout).toContain('Reason: keyCompromise');
    },
  );

  it('revoking one certificate by serial drops its cached answer too', async () => {
    const cert = await enroll('oc-2');
    const req = await ocspRequest(h.ca, cert.der);
    expect(await parseOcspResponse(h.ca, await revocation.ocsp(req))).toMatchObject({ status: 'good' });
    expect(await parseOcspResponse(h.ca, await revocation.ocsp(req))).toMatchObject({ status: 'good' });
    await revocation.revokeCertificate(cert.serial, 4, OPERATOR);
    expect(await parseOcspResponse(h.ca, await revocation.ocsp(req))).toMatchObject({
      status: 'revoked',
      signatureValid: true,
      reason: 4,
    });
  });

  it.runIf(hasOpenssl)('a request with a nonce is signed afresh and gets its own nonce back', async () => {
    await enroll('oc-3');
    for (const n of [1, 2]) {
      dir.ok(['ocsp', '-issuer', 'issuing.pem', '-cert', 'oc-3.pem', '-reqout', `oc-3-req${n}.der`]);
      dir.write(`oc-3-resp${n}.der`, await revocation.ocsp(new Uint8Array(dir.read(`oc-3-req${n}.der`))));
      const r = dir.run([
        'ocsp',
        '-respin',
        `oc-3-resp${n}.der`,
        '-reqin',
        `oc-3-req${n}.der`,
        '-CAfile',
        'bundle.pem',
      ]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toContain('Response verify OK');
      expect(r.stdout + r.stderr).not.toMatch(/nonce/i);
    }
    expect(dir.read('oc-3-resp1.der').equals(dir.read('oc-3-resp2.der'))).toBe(false);
  });
});

describe.runIf(await postgresAvailable())('OCSP cache across processes (PostgreSQL LISTEN/NOTIFY)', () => {
  it('a revocation made through another node drops this node’s cached answer', async () => {
    const db = await createTestDatabase();
    const h = await openHarness({
      name: 'postgres',
      open: async () => {
        const store = await openStore({ databaseUrl: db.url });
        return { store, dispose: () => store.close() };
      },
    });
    const other = await openStore({ databaseUrl: db.url });
    const thisNode = createRevocation({ store: other, ca: h.ca, audit: h.audit });
    try {
      const [t] = await h.provisioning.createTokens({ deviceIds: ['oc-node'] }, { actor: OPERATOR });
      const r = await h.provisioning.enroll({
        deviceId: 'oc-node',
        token: t!.token,
        csr: (await makeCsr('oc-node')).der,
      });
      const req = await ocspRequest(h.ca, r.certificate.der);
      const first = await thisNode.ocsp(req);
      expect(Buffer.from(await thisNode.ocsp(req))).toEqual(Buffer.from(first)); // cached here
      await h.revocation.revokeDevice('oc-node', 0, OPERATOR); // on the "other node"
      const answer = await waitFor(
        'the revocation on this node',
        async () => {
          const a = await parseOcspResponse(h.ca, await thisNode.ocsp(req));
          return 'status' in a && a.status === 'revoked' ? a : undefined;
        },
        10_000,
      );
      expect(answer).toMatchObject({ status: 'revoked', signatureValid: true });
    } finally {
      await thisNode.close();
      await other.close();
      await h.close();
      await db.drop();
    }
  });
});
