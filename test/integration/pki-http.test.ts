/**
 * The plain-HTTP CRL/OCSP listener (FLEETGATE_PKI_HTTP_PORT): only /crl and /ocsp are served
 * there, new certificates carry its http:// URLs (RFC 5280 4.2.1.13, 4.2.2.1; RFC 6960 appendix
 * A), and stock tools fetch from the URLs in the certificate: `curl`, `openssl ocsp -url`,
 * `openssl verify -crl_download`. OCSP GET answers carry RFC 5019 6.2 caching headers.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../server/src/config.js';
import { pkiBaseUrl } from '../../server/src/main.js';
import { runCli, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { NEW_P256_KEY } from '../helpers/openssl.js';
import { requireTool } from '../helpers/system-tools.js';

const tools = requireTool('openssl') && requireTool('curl');

describe('where certificates point for /crl and /ocsp', () => {
  const base = (env: Record<string, string>, port: number | null) =>
    pkiBaseUrl(loadConfig(env), loadConfig(env).publicUrl, port);
  it('http:// on the bind host at the PKI port by default', () => {
    expect(base({}, 8080)).toBe('http://127.0.0.1:8080');
  });
  it('the public URL host at the PKI port when FLEETGATE_PUBLIC_URL is set', () => {
    expect(base({ FLEETGATE_PUBLIC_URL: 'https://pki.example.com:443/x' }, 8080)).toBe('http://pki.example.com:8080');
    expect(base({ FLEETGATE_PUBLIC_URL: 'https://[2001:db8::1]:8443' }, 80)).toBe('http://[2001:db8::1]:80');
  });
  it('FLEETGATE_PKI_PUBLIC_URL wins; with the listener off, the HTTPS public URL', () => {
    expect(base({ FLEETGATE_PKI_PUBLIC_URL: 'http://crl.example.com/' }, 8080)).toBe('http://crl.example.com');
    const off = loadConfig({ FLEETGATE_PKI_HTTP_PORT: 'off' });
    expect(off.pkiHttpPort).toBeNull();
    expect(pkiBaseUrl(off, off.publicUrl, null)).toBe('https://127.0.0.1:8443');
    expect(loadConfig({}).pkiHttpPort).toBe(8080);
    expect(loadConfig({ FLEETGATE_PKI_HTTP_PORT: '0' }).pkiHttpPort).toBe(0);
    expect(() => loadConfig({ FLEETGATE_PKI_HTTP_PORT: 'nope' })).toThrow(/FLEETGATE_PKI_HTTP_PORT .*or off/);
    expect(() => loadConfig({ FLEETGATE_PKI_HTTP_PORT: '70000' })).toThrow(/FLEETGATE_PKI_HTTP_PORT/);
    expect(() => loadConfig({ FLEETGATE_PKI_PUBLIC_URL: 'ftp://x' })).toThrow(/FLEETGATE_PKI_PUBLIC_URL/);
  });
});

describe.runIf(tools)('plain-HTTP CRL/OCSP listener', () => {
  let server: ServeHandle;
  let dataDir: string;
  let work: string;
  let pkiUrl: string;
  const env = () => ({ FLEETGATE_DATA_DIR: dataDir });
  const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { cwd: work, encoding: 'latin1' });
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: work, encoding: 'utf8', stdio: 'pipe' });
  /** curl; returns status, headers (lower case) and the body file name. */
  const curl = (url: string, out: string, extra: string[] = []) => {
    const r = sh('curl', ['-sS', '-o', out, '-D', `${out}.h`, '-w', '%{http_code}', ...extra, url]);
    if (r.status !== 0) throw new Error(`curl ${url}: ${r.stderr}`);
    return { status: Number(r.stdout), headers: readFileSync(path.join(work, `${out}.h`), 'latin1').toLowerCase() };
  };

  beforeAll(async () => {
    dataDir = tempDir('fg-pki-http-');
    work = tempDir('fg-pki-work-');
    server = await startServe(env());
    pkiUrl = /CRL\/OCSP\s+(http:\/\/\S+)\/crl/.exec(server.banner)?.[1] ?? '';
    writeFileSync(path.join(work, 'bundle.pem'), (await runCli(['ca', 'export'], env())).stdout);
    writeFileSync(path.join(work, 'issuing.pem'), (await runCli(['ca', 'export', '--issuing-only'], env())).stdout);
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
    for (const d of [dataDir, work]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('is in the banner and in serve.json', () => {
    expect(pkiUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(pkiUrl).not.toBe(server.apiUrl.replace('https', 'http'));
    const runtime = JSON.parse(readFileSync(path.join(dataDir, 'serve.json'), 'utf8'));
    expect(runtime.pkiUrl).toBe(pkiUrl);
  });

  it('serves only /crl and /ocsp; everything else is 404', () => {
    const crl = curl(`${pkiUrl}/crl`, 'plain.crl');
    expect(crl.status).toBe(200);
    expect(crl.headers).toContain('content-type: application/pkix-crl');
    const verified = sh('openssl', ['crl', '-inform', 'DER', '-in', 'plain.crl', '-CAfile', 'bundle.pem', '-noout']);
    expect(verified.stderr).toContain('verify OK');
    for (const p of ['/healthz', '/metrics', '/.well-known/est/cacerts', '/api/v1/devices', '/docs', '/']) {
      expect(curl(`${pkiUrl}${p}`, 'other').status, p).toBe(404);
    }
    // HTTPS keeps serving them too.
    expect(curl(`${server.apiUrl}/crl`, 'tls.crl', ['--cacert', 'bundle.pem']).status).toBe(200);
  });

  it('a new certificate names the plain-HTTP URLs, and openssl fetches from them (OCSP, CRL download)', async () => {
    openssl([
      'req',
      '-new',
      ...NEW_P256_KEY,
      '-keyout',
      'dev.key',
      '-subj',
      '/CN=pki-dev',
      '-outform',
      'DER',
      '-out',
      'dev.csr',
    ]);
    writeFileSync(path.join(work, 'dev.b64'), readFileSync(path.join(work, 'dev.csr')).toString('base64'));
    const tok = await runCli(['token', 'create', '--device', 'pki-dev', '--json'], env());
    const token = JSON.parse(tok.stdout)[0].token as string;
    const enrolled = curl(`${server.apiUrl}/.well-known/est/simpleenroll`, 'dev.p7', [
      '--cacert',
      'bundle.pem',
      '-u',
      `pki-dev:${token}`,
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      '@dev.b64',
    ]);
    expect(enrolled.status).toBe(200);
    writeFileSync(
      path.join(work, 'dev.p7.der'),
      Buffer.from(readFileSync(path.join(work, 'dev.p7'), 'latin1').replace(/\s+/g, ''), 'base64'),
    );
    writeFileSync(
      path.join(work, 'dev.pem'),
      openssl(['pkcs7', '-inform', 'DER', '-in', 'dev.p7.der', '-print_certs']),
    );
    const text = openssl(['x509', '-in', 'dev.pem', '-noout', '-text']);
    expect(text).toContain(`URI:${pkiUrl}/crl`);
    expect(text).toContain(`OCSP - URI:${pkiUrl}/ocsp`);
    const ocspUrl = openssl(['x509', '-in', 'dev.pem', '-noout', '-ocsp_uri']).trim();
    expect(ocspUrl).toBe(`${pkiUrl}/ocsp`);

    const ask = () =>
      sh('openssl', ['ocsp', '-issuer', 'issuing.pem', '-cert', 'dev.pem', '-url', ocspUrl, '-CAfile', 'bundle.pem']);
    const good = ask();
    expect(good.stderr).toContain('Response verify OK');
    expect(good.stdout).toMatch(/^dev\.pem: good\n/);
    const crlOk = sh('openssl', ['verify', '-crl_check', '-crl_download', '-CAfile', 'bundle.pem', 'dev.pem']);
    expect(crlOk.stdout + crlOk.stderr).toContain('dev.pem: OK');

    // OCSP GET (RFC 6960 A.1): RFC 5019 6.2 caching headers on the plain listener.
    openssl(['ocsp', '-issuer', 'issuing.pem', '-cert', 'dev.pem', '-no_nonce', '-reqout', 'get.req']);
    const b64 = encodeURIComponent(readFileSync(path.join(work, 'get.req')).toString('base64'));
    const got = curl(`${pkiUrl}/ocsp/${b64}`, 'get.resp');
    expect(got.status).toBe(200);
    expect(got.headers).toContain('content-type: application/ocsp-response');
    expect(got.headers).toMatch(/cache-control: max-age=(\d+), public, no-transform, must-revalidate/);
    const maxAge = Number(/max-age=(\d+)/.exec(got.headers)?.[1]);
    expect(maxAge).toBeGreaterThan(3_000);
    expect(maxAge).toBeLessThanOrEqual(3_600);
    expect(got.headers).toMatch(/last-modified: \w{3}, \d\d \w{3} \d{4}/);
    expect(got.headers).toMatch(/expires: \w{3}, \d\d \w{3} \d{4}/);
    expect(got.headers).toMatch(/etag: "[0-9a-f]{40}"/);
    const st = sh('openssl', [
      'ocsp',
      '-respin',
      'get.resp',
      '-CAfile',
      'bundle.pem',
      '-issuer',
      'issuing.pem',
      '-cert',
      'dev.pem',
      '-no_nonce',
    ]);
    expect(st.stdout).toMatch(/^dev\.pem: good\n/);

    const revoked = await runCli(['revoke', 'pki-dev', '--reason', 'keyCompromise'], env());
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(ask().stdout).toMatch(/^dev\.pem: revoked\n/);
    const crlRevoked = sh('openssl', ['verify', '-crl_check', '-crl_download', '-CAfile', 'bundle.pem', 'dev.pem']);
    expect(crlRevoked.stdout + crlRevoked.stderr).toContain('certificate revoked');
  });
});
