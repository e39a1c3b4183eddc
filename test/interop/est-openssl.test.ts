/**
 * The provisioning service with tools nobody here wrote: a CSR from `openssl req`, posted with
 * `curl` to EST, answer decoded by `openssl pkcs7` and checked by `openssl verify`; renewal with
 * the issued certificate as TLS client cert; CRL checked by `openssl crl -verify`; OCSP asked by
 * `openssl ocsp`; revocation and audit through the `fleetgate` CLI.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { NEW_P256_KEY } from '../helpers/openssl.js';
import { createTestDatabase } from '../helpers/pg.js';
import { requireTool } from '../helpers/system-tools.js';

const tools = requireTool('openssl') && requireTool('curl');

interface Curl {
  status: number;
  headers: string;
  body: string;
}

function curl(args: string[], input?: string): Curl {
  const dir = tempDir('fg-curl-');
  const headersFile = path.join(dir, 'h');
  const bodyFile = path.join(dir, 'b');
  const r = spawnSync('curl', ['-sS', '-o', bodyFile, '-D', headersFile, '-w', '%{http_code}', ...args], {
    encoding: 'utf8',
    ...(input !== undefined ? { input } : {}),
  });
  if (r.status !== 0) throw new Error(`curl failed: ${r.stderr}`);
  return {
    status: Number(r.stdout),
    headers: readFileSync(headersFile, 'utf8'),
    body: readFileSync(bodyFile, 'latin1'),
  };
}

function openssl(args: string[], opts: { cwd: string; input?: string | Buffer }): string {
  return execFileSync('openssl', args, {
    cwd: opts.cwd,
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
    input: opts.input ?? '',
  });
}

const backends = [
  { name: 'embedded PGlite', pg: false },
  { name: 'PostgreSQL', pg: true },
];

describe.runIf(tools).each(backends)('EST enrollment, renewal and revocation with openssl + curl ($name)', ({ pg }) => {
  let server: ServeHandle;
  let env: Record<string, string>;
  let db: { url: string; drop(): Promise<void> } | undefined;
  let work: string;
  let bundle: string;
  let est: string;

  const cli = async (args: string[]) => runCli(args, env);

  beforeAll(async () => {
    if (pg) db = await createTestDatabase();
    env = { FLEETGATE_DATA_DIR: tempDir(), ...(db ? { DATABASE_URL: db.url } : {}) };
    server = await startServe(env);
    // The certificates must name the port the test server really listens on.
    work = tempDir('fg-est-');
    const exported = await cli(['ca', 'export']);
    expect(exported.code).toBe(0);
    bundle = path.join(work, 'bundle.pem');
    writeFileSync(bundle, exported.stdout);
    writeFileSync(path.join(work, 'issuing.pem'), (await cli(['ca', 'export', '--issuing-only'])).stdout);
    est = `${server.apiUrl}/.well-known/est`;
  });

  afterAll(async () => {
    await server?.stop();
    await db?.drop();
  });

  function makeCsr(name: string, cn: string): string {
    openssl(
      [
        'req',
        '-new',
        ...NEW_P256_KEY,
        '-keyout',
        `${name}.key`,
        '-subj',
        `/CN=${cn}`,
        '-outform',
        'DER',
        '-out',
        `${name}.csr.der`,
      ],
      { cwd: work },
    );
    return readFileSync(path.join(work, `${name}.csr.der`)).toString('base64');
  }

  /** Decodes an EST certs-only answer into PEM with openssl and returns the file name. */
  function decodeAnswer(body: string, name: string): string {
    writeFileSync(path.join(work, `${name}.p7.der`), Buffer.from(body.replace(/\s+/g, ''), 'base64'));
    const pem = openssl(['pkcs7', '-inform', 'DER', '-in', `${name}.p7.der`, '-print_certs'], { cwd: work });
    writeFileSync(path.join(work, `${name}.crt`), pem);
    return `${name}.crt`;
  }

  async function token(device: string): Promise<string> {
    const r = await cli(['token', 'create', '--device', device, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const parsed = JSON.parse(r.stdout) as { deviceId: string; token: string; expiresAt: string }[];
    expect(parsed).toHaveLength(1);
    expect(parsed[0]?.deviceId).toBe(device);
    expect(Date.parse(parsed[0]?.expiresAt ?? '')).toBeGreaterThan(Date.now());
    return parsed[0]?.token ?? '';
  }

  const enrollArgs = (user: string, pass: string, csrFile: string) => [
    '--cacert',
    bundle,
    '-u',
    `${user}:${pass}`,
    '-H',
    'Content-Type: application/pkcs10',
    '--data-binary',
    `@${csrFile}`,
    `${est}/simpleenroll`,
  ];

  let certFile = '';
  let renewedFile = '';

  it('serves cacerts and csrattrs as RFC 7030 says', () => {
    const r = curl(['--cacert', bundle, `${est}/cacerts`]);
    expect(r.status).toBe(200);
    expect(r.headers.toLowerCase()).toContain('content-type: application/pkcs7-mime');
    expect(r.headers.toLowerCase()).toContain('content-transfer-encoding: base64');
    const pem = readFileSync(path.join(work, decodeAnswer(r.body, 'cacerts')), 'utf8');
    expect(pem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    const attrs = curl(['--cacert', bundle, `${est}/csrattrs`]);
    expect(attrs.status).toBe(200);
    expect(attrs.headers.toLowerCase()).toContain('content-type: application/csrattrs');
    writeFileSync(path.join(work, 'attrs.der'), Buffer.from(attrs.body, 'base64'));
    expect(openssl(['asn1parse', '-inform', 'DER', '-in', 'attrs.der'], { cwd: work })).toContain('ecdsa-with-SHA256');
  });

  it('asks for Basic auth, enrolls a CSR made by openssl, and the cert verifies with openssl', async () => {
    writeFileSync(path.join(work, 'dev1.b64'), makeCsr('dev1', 'dev-1'));
    const anon = curl([
      '--cacert',
      bundle,
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      '@dev1.b64',
      `${est}/simpleenroll`,
    ]);
    expect(anon.status).toBe(401);
    expect(anon.headers).toMatch(/www-authenticate: Basic/i);
    expect(JSON.parse(anon.body).code).toBe('AUTH_REQUIRED');

    const secret = await token('dev-1');
    const r = curl(enrollArgs('dev-1', secret, path.join(work, 'dev1.b64')));
    expect(r.status, r.body).toBe(200);
    expect(r.headers.toLowerCase()).toContain('content-type: application/pkcs7-mime; smime-type=certs-only');
    certFile = decodeAnswer(r.body, 'dev1');
    expect(openssl(['verify', '-CAfile', bundle, certFile], { cwd: work })).toContain('OK');
    const text = openssl(['x509', '-in', certFile, '-noout', '-text'], { cwd: work });
    expect(text).toContain('Subject: CN = dev-1');
    expect(text).toContain('URI:urn:fleetgate:device:dev-1');
    // Revocation URLs point at the plain-HTTP listener (RFC 5280 4.2.1.13, 4.2.2.1).
    const pkiUrl = /CRL\/OCSP\s+(http:\/\/\S+)\/crl/.exec(server.banner)?.[1];
    expect(pkiUrl, server.banner).toBeDefined();
    expect(text).toContain(`URI:${pkiUrl}/crl`);
    expect(text).toContain(`OCSP - URI:${pkiUrl}/ocsp`);

    // The token is one-time: a replay is refused and issues nothing.
    writeFileSync(path.join(work, 'dev1b.b64'), makeCsr('dev1b', 'dev-1'));
    const replay = curl(enrollArgs('dev-1', secret, path.join(work, 'dev1b.b64')));
    expect(replay.status).toBe(401);
    expect(JSON.parse(replay.body).code).toBe('TOKEN_USED');

    const shown = await cli(['devices', 'show', 'dev-1', '--json']);
    expect(shown.code, shown.stderr).toBe(0);
    const device = JSON.parse(shown.stdout);
    expect(device.certificates).toHaveLength(1);
    expect(device.status).toBe('active');
  });

  it('renews with the issued certificate as TLS client certificate (new key)', () => {
    writeFileSync(path.join(work, 'dev1r.b64'), makeCsr('dev1r', 'dev-1'));
    const r = curl([
      '--cacert',
      bundle,
      '--cert',
      path.join(work, certFile),
      '--key',
      path.join(work, 'dev1.key'),
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      `@${path.join(work, 'dev1r.b64')}`,
      `${est}/simplereenroll`,
    ]);
    expect(r.status, r.body).toBe(200);
    renewedFile = decodeAnswer(r.body, 'dev1-renewed');
    expect(openssl(['verify', '-CAfile', bundle, renewedFile], { cwd: work })).toContain('OK');
    const oldSerial = openssl(['x509', '-in', certFile, '-noout', '-serial'], { cwd: work });
    const newSerial = openssl(['x509', '-in', renewedFile, '-noout', '-serial'], { cwd: work });
    expect(newSerial).not.toBe(oldSerial);

    // Without a client certificate re-enrollment is refused.
    const noCert = curl([
      '--cacert',
      bundle,
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      `@${path.join(work, 'dev1r.b64')}`,
      `${est}/simplereenroll`,
    ]);
    expect(noCert.status).toBe(401);
    expect(JSON.parse(noCert.body).code).toBe('CERT_REQUIRED');
  });

  it('publishes revocation: CRL and OCSP before and after `fleetgate revoke`', async () => {
    writeFileSync(
      path.join(work, 'crl0.der'),
      Buffer.from(curl(['--cacert', bundle, `${server.apiUrl}/crl`]).body, 'latin1'),
    );
    const crl0 = openssl(
      ['crl', '-inform', 'DER', '-in', 'crl0.der', '-CAfile', bundle, '-verify', '-noout', '-text'],
      { cwd: work },
    );
    expect(crl0).toContain('No Revoked Certificates');

    const ocspArgs = (cert: string) => [
      'ocsp',
      '-issuer',
      'issuing.pem',
      '-cert',
      cert,
      '-url',
      `${server.apiUrl}/ocsp`,
      '-CAfile',
      bundle,
      '-verify_other',
      'issuing.pem',
    ];
    // openssl ocsp reaches https URLs with the same trust anchors (-CAfile).
    const good = openssl(ocspArgs(certFile), { cwd: work });
    expect(good).toContain(`${certFile}: good`);

    const revoked = await cli(['revoke', 'dev-1', '--reason', 'keyCompromise', '--json']);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(JSON.parse(revoked.stdout).revoked).toHaveLength(2);

    writeFileSync(
      path.join(work, 'crl1.der'),
      Buffer.from(curl(['--cacert', bundle, `${server.apiUrl}/crl`]).body, 'latin1'),
    );
    const crl1 = openssl(
      ['crl', '-inform', 'DER', '-in', 'crl1.der', '-CAfile', bundle, '-verify', '-noout', '-text'],
      { cwd: work },
    );
    const serial = openssl(['x509', '-in', certFile, '-noout', '-serial'], { cwd: work }).trim().split('=')[1] ?? '';
    expect(crl1.toUpperCase()).toContain(serial.toUpperCase());
    expect(crl1).toContain('Key Compromise');
    const n0 = Number(/X509v3 CRL Number:\s*\n\s*(\d+)/.exec(crl0)?.[1]);
    const n1 = Number(/X509v3 CRL Number:\s*\n\s*(\d+)/.exec(crl1)?.[1]);
    expect(n1).toBeGreaterThan(n0);

    const ocspRevoked = openssl(ocspArgs(renewedFile), { cwd: work });
    expect(ocspRevoked).toContain(`${renewedFile}: revoked`);
    // openssl's own chain + CRL check now rejects the certificate.
    openssl(['crl', '-inform', 'DER', '-in', 'crl1.der', '-out', 'crl1.pem'], { cwd: work });
    const check = spawnSync('openssl', ['verify', '-crl_check', '-CAfile', bundle, '-CRLfile', 'crl1.pem', certFile], {
      cwd: work,
      encoding: 'utf8',
    });
    expect(check.status).not.toBe(0);
    expect(check.stdout + check.stderr).toContain('certificate revoked');
  });

  it('a revoked device cannot renew', () => {
    writeFileSync(path.join(work, 'dev1x.b64'), makeCsr('dev1x', 'dev-1'));
    const r = curl([
      '--cacert',
      bundle,
      '--cert',
      path.join(work, renewedFile),
      '--key',
      path.join(work, 'dev1r.key'),
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      `@${path.join(work, 'dev1x.b64')}`,
      `${est}/simplereenroll`,
    ]);
    expect(r.status).toBe(403);
    expect(['CERT_REVOKED', 'DEVICE_REVOKED']).toContain(JSON.parse(r.body).code);
  });

  it('keeps an audit chain that `fleetgate audit verify` checks (and tampering is caught on PostgreSQL)', async () => {
    const ok = await cli(['audit', 'verify']);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/audit chain intact: \d+ event/);
    if (!db) return;
    const sql = postgres(db.url, { max: 1, onnotice: () => undefined });
    try {
      const rows = await sql<{ seq: string }[]>`SELECT seq FROM audit_events ORDER BY seq LIMIT 1 OFFSET 2`;
      const seq = Number(rows[0]?.seq);
      // The table refuses UPDATE through a trigger; an attacker with DDL rights gets past it.
      await sql`ALTER TABLE audit_events DISABLE TRIGGER USER`;
      await sql`UPDATE audit_events SET actor = 'operator:mallory' WHERE seq = ${seq}`;
      const broken = await cli(['audit', 'verify', '--json']);
      expect(broken.code).toBe(1);
      expect(JSON.parse(broken.stdout)).toMatchObject({ ok: false, brokenAtSeq: seq });
    } finally {
      await sql.end();
    }
  });
});
