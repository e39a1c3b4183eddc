/**
 * The device client's TPM attestation pieces without a TPM: the CSR with the evidence attribute
 * as the server parses it (server/src/attest/csr-evidence.ts reads what the client writes), the
 * marshalled TPM2_Certify and hostile responses to it, EK certificate trimming, the tool runner's
 * errors (missing tool, failing tool, secrets redacted), the attestation exchange against a
 * hostile EST server (every bad answer is SERVER_ERROR, refusals keep the server's code), and
 * fleetgate-sim's new options.
 */
import 'reflect-metadata';
import { createPublicKey, verify, webcrypto } from 'node:crypto';
import { promises as fs } from 'node:fs';
import https from 'node:https';
import { inspect } from 'node:util';
import * as x509 from '@peculiar/x509';
import * as asn1js from 'asn1js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ATTR_EVIDENCE,
  createCsrWithEvidence,
  type DeviceKey,
  EstClient,
  SoftwareKeyStore,
  TpmError,
  TpmKeyStore,
  TpmTools,
} from '../../device-client/src/index.js';
import { trimDer } from '../../device-client/src/tpm/attest.js';
import { certifyCommand, parseCertifyResponse } from '../../device-client/src/tpm/certify-command.js';
import { parseArgs, UsageError } from '../../firmware-sim/src/args.js';
import { csrParts, mayCarryEvidence, ATTR_EVIDENCE as SERVER_ATTR_EVIDENCE } from '../../server/src/attest/index.js';
import { tempDir } from '../helpers/cli.js';
import { listenLocal, testServerTls } from '../helpers/test-ca.js';

x509.cryptoProvider.set(webcrypto as never);

const statement = {
  keyPublic: Buffer.from('00580023000b00050472', 'hex'),
  attest: Buffer.from('ff54434780170022', 'hex'),
  signature: Buffer.from('0018000b0020', 'hex'),
};

describe('CSR with TPM evidence', () => {
  it('is what the server parses: same key, same statement, signature valid, CN = device id', async () => {
    expect(ATTR_EVIDENCE).toBe(SERVER_ATTR_EVIDENCE);
    const store = new SoftwareKeyStore(tempDir('fg-dc-attest-unit-'));
    const key = await store.generate({ deviceId: 'dev-1' });
    const der = await createCsrWithEvidence('dev-1', key, statement);
    expect(mayCarryEvidence(der)).toBe(true);
    const parts = csrParts(der);
    expect(parts.spki.equals(Buffer.from(await key.spki()))).toBe(true);
    expect(parts.tpm).toEqual(statement);
    const csr = new x509.Pkcs10CertificateRequest(der);
    expect(csr.subject).toBe('CN=dev-1');
    expect(await csr.verify()).toBe(true);
    // And node:crypto agrees on the signature over the CertificationRequestInfo.
    const [info, , sig] = (asn1js.fromBER(new Uint8Array(der)).result as asn1js.Sequence).valueBlock.value;
    const ok = verify(
      'sha256',
      Buffer.from(info!.toBER(false)),
      createPublicKey({ key: Buffer.from(await key.spki()), format: 'der', type: 'spki' }),
      Buffer.from((sig as asn1js.BitString).valueBlock.valueHexView),
    );
    expect(ok).toBe(true);
  });

  it('refuses to send a request whose signature does not verify (a token that signs garbage)', async () => {
    const store = new SoftwareKeyStore(tempDir('fg-dc-attest-unit-'));
    const key = await store.generate({ deviceId: 'dev-2' });
    const other = await store.generate({ deviceId: 'dev-2' });
    const liar = { ...key, keys: other.keys, crypto: key.crypto, spki: () => key.spki(), tlsOptions: key.tlsOptions };
    await expect(createCsrWithEvidence('dev-2', liar, statement)).rejects.toMatchObject({ code: 'CERT_VERIFY_FAILED' });
  });
});

describe('TPM2_Certify marshalling', () => {
  it('lays out the command of TPM 2.0 Part 3 18.2 with both password sessions and the nonce', () => {
    const nonce = Buffer.alloc(32, 0xab);
    const cmd = certifyCommand(0x8100f000, Buffer.from('secret'), 0x8100f001, nonce);
    expect(cmd.readUInt16BE(0)).toBe(0x8002);
    expect(cmd.readUInt32BE(2)).toBe(cmd.length);
    expect(cmd.readUInt32BE(6)).toBe(0x148);
    expect(cmd.readUInt32BE(10)).toBe(0x8100f000);
    expect(cmd.readUInt32BE(14)).toBe(0x8100f001);
    const authSize = cmd.readUInt32BE(18);
    expect(authSize).toBe(9 + 6 + 9);
    expect(cmd.subarray(22 + 9, 22 + 15).toString()).toBe('secret');
    const params = cmd.subarray(22 + authSize);
    expect(params.readUInt16BE(0)).toBe(32);
    expect(params.subarray(2, 34).equals(nonce)).toBe(true);
    expect(params.readUInt16BE(34)).toBe(0x0010);
    expect(params.length).toBe(36);
    expect(() => certifyCommand(1, Buffer.alloc(0), 2, Buffer.alloc(65))).toThrow(TpmError);
  });

  const response = (attest: Buffer, signature: Buffer, rc = 0) => {
    const params = Buffer.concat([Buffer.from([attest.length >> 8, attest.length & 0xff]), attest, signature]);
    const head = Buffer.alloc(14);
    head.writeUInt16BE(0x8002, 0);
    head.writeUInt32BE(14 + params.length, 2);
    head.writeUInt32BE(rc, 6);
    head.writeUInt32BE(params.length, 10);
    return Buffer.concat([head, params]);
  };

  it('splits a response into TPMS_ATTEST and TPMT_SIGNATURE', () => {
    const r = parseCertifyResponse(response(Buffer.from('attest'), Buffer.from('sig')));
    expect(r.attest.toString()).toBe('attest');
    expect(r.signature.toString()).toBe('sig');
  });

  it.each([
    ['empty', Buffer.alloc(0), /malformed/],
    ['a header only', Buffer.from('80020000000a00000000', 'hex'), /no parameter area/],
    [
      'a size that lies',
      Buffer.concat([response(Buffer.from('a'), Buffer.from('b')), Buffer.from([0])]),
      /header says/,
    ],
    ['a TPM error (auth failure)', Buffer.from('80010000000a0000098e', 'hex'), /TPM_RC 0x98e/],
    [
      'attest longer than the parameters',
      (() => {
        const r = response(Buffer.from('attest'), Buffer.from('sig'));
        r.writeUInt16BE(500, 14);
        return r;
      })(),
      /TPM2B_ATTEST size/,
    ],
    [
      'parameterSize beyond the response',
      (() => {
        const r = response(Buffer.from('attest'), Buffer.from('sig'));
        r.writeUInt32BE(9999, 10);
        return r;
      })(),
      /beyond/,
    ],
  ])('refuses %s with TPM_ERROR at step certify', (_what, bytes, message) => {
    let thrown: unknown;
    try {
      parseCertifyResponse(bytes);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(TpmError);
    expect(thrown).toMatchObject({ code: 'TPM_ERROR', step: 'certify' });
    expect(String((thrown as Error).message)).toMatch(message);
  });

  it('trims the padding TPMs leave after the EK certificate in NV, leaves other bytes alone', () => {
    const cert = Buffer.concat([Buffer.from([0x30, 0x82, 0x00, 0x03]), Buffer.from('abc')]);
    expect(trimDer(Buffer.concat([cert, Buffer.alloc(20, 0xff)])).equals(cert)).toBe(true);
    expect(trimDer(Buffer.from([0x30, 0x03, 1, 2, 3, 0, 0])).equals(Buffer.from([0x30, 0x03, 1, 2, 3]))).toBe(true);
    const garbage = Buffer.from([0x04, 0x02, 0xff]);
    expect(trimDer(garbage)).toBe(garbage);
    const short = Buffer.from([0x30, 0x82, 0x10, 0x00, 1]);
    expect(trimDer(short)).toBe(short);
  });
});

describe('TPM tool runner', () => {
  const cwd = tempDir('fg-dc-tpmtools-');
  it('names a missing tool and the step (TPM_TOOLS_MISSING)', async () => {
    const tools = new TpmTools();
    await expect(tools.run('ek-certificate', 'tpm2_no_such_tool_here', [], { cwd })).rejects.toMatchObject({
      code: 'TPM_TOOLS_MISSING',
      step: 'ek-certificate',
      message: expect.stringMatching(/tpm2_no_such_tool_here is not installed/),
    });
  });
  it('reports a failing tool with its stderr and exit code, secrets redacted (TPM_ERROR)', async () => {
    const tools = new TpmTools({ tcti: 'swtpm:port=1' });
    const e = await tools
      .run('export-key', 'sh', ['-c', 'echo "bad pin 9876 for $TPM2TOOLS_TCTI" >&2; exit 3', '9876'], {
        cwd,
        secrets: ['9876'],
      })
      .then(
        () => undefined,
        (err: unknown) => err as TpmError,
      );
    expect(e).toMatchObject({ code: 'TPM_ERROR', step: 'export-key' });
    if (!e) return;
    expect(e.message).toMatch(/exit 3/);
    expect(e.message).toMatch(/bad pin \*\*\* for swtpm:port=1/);
    expect(e.message).not.toMatch(/9876/);
  });
  it('feeds stdin and returns stdout', async () => {
    const out = await new TpmTools().run('certify', 'cat', [], { cwd, input: Buffer.from('bytes') });
    expect(out.toString()).toBe('bytes');
  });
});

describe('TPM key store', () => {
  const fakeKey = (uri: string) => ({ ref: { type: 'pkcs11', uri } }) as unknown as DeviceKey;
  const neverCalled = {
    challenge: () => Promise.reject(new Error('the server must not be reached')),
    activate: () => Promise.reject(new Error('the server must not be reached')),
  };

  it('reports missing TPM tools as TPM_TOOLS_MISSING at export-key and removes its work directory', async () => {
    const workDir = tempDir('fg-dc-tpmks-');
    const store = new TpmKeyStore({
      module: '/nonexistent/libtpm2_pkcs11.so',
      token: 'tok',
      pin: '1234',
      toolsEnv: { PATH: '/nonexistent' },
      workDir,
    });
    await expect(store.attest(fakeKey('pkcs11:token=tok;object=k1;type=private'), neverCalled)).rejects.toMatchObject({
      code: 'TPM_TOOLS_MISSING',
      step: 'export-key',
      message: expect.stringMatching(/tpm2_ptool is not installed/),
    });
    expect(await fs.readdir(workDir)).toEqual([]);
  });

  it('refuses a key reference that is not a token key, and a TCTI that conflicts with the process (INVALID_OPTIONS)', async () => {
    const store = new TpmKeyStore({ module: '/x.so', token: 'tok', pin: '1', toolsEnv: { PATH: '/nonexistent' } });
    const soft = { ref: { type: 'software', file: 'key-00.pem' } } as unknown as DeviceKey;
    await expect(store.attest(soft, neverCalled)).rejects.toMatchObject({ code: 'TPM_ERROR', step: 'export-key' });
    const saved = process.env.TPM2_PKCS11_TCTI;
    process.env.TPM2_PKCS11_TCTI = 'device:/dev/tpmrm0';
    try {
      expect(() => new TpmKeyStore({ module: '/x.so', token: 'tok', pin: '1', tcti: 'swtpm:port=2321' })).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      );
      expect(
        () => new TpmKeyStore({ module: '/x.so', token: 'tok', pin: '1', tcti: 'device:/dev/tpmrm0' }),
      ).not.toThrow();
      expect(() => new TpmKeyStore({ module: '/x.so', token: 'tok', pin: '1', ek: 'dsa' as 'rsa' })).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      );
    } finally {
      if (saved === undefined) delete process.env.TPM2_PKCS11_TCTI;
      else process.env.TPM2_PKCS11_TCTI = saved;
    }
  });

  it('never shows the PIN when inspected or serialized', () => {
    const store = new TpmKeyStore({ module: '/x.so', token: 'tok', pin: 'pin-5150' });
    expect(inspect(store)).not.toMatch(/5150/);
    expect(JSON.stringify(store)).not.toMatch(/5150/);
    expect(store.type).toBe('tpm');
    expect(store.attests).toBe(true);
    expect(new TpmKeyStore({ module: '/x.so', token: 'tok', pin: '1', attest: false }).attests).toBe(false);
  });
});

describe('attestation exchange against a hostile EST server', () => {
  let server: https.Server;
  let ca: string;
  let url: string;
  let answer: { status: number; body: string; type?: string } = { status: 200, body: '{}' };
  const seen: { path: string; auth: string | undefined; type: string | undefined; body: string }[] = [];

  beforeAll(async () => {
    const tls = await testServerTls('hostile test CA');
    ca = tls.ca.cert.toString('pem');
    server = https.createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        seen.push({ path: req.url ?? '', auth: req.headers.authorization, type: req.headers['content-type'], body });
        res.writeHead(answer.status, { 'content-type': answer.type ?? 'application/json' });
        res.end(answer.body);
      });
    });
    url = await listenLocal(server);
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  const exchange = () => new EstClient({ url, ca, timeoutMs: 5_000 }).attestationExchange('dev-9', 'fgt_token');
  const req = { ekCert: Buffer.from('cert'), ekPublic: Buffer.from('ekpub'), akPublic: Buffer.from('akpub') };

  it('posts JSON with Basic device id : token, base64 fields, and reads a good answer', async () => {
    answer = {
      status: 200,
      body: JSON.stringify({ challengeId: 'A'.repeat(43), credentialFile: Buffer.from('cred').toString('base64') }),
    };
    const c = await exchange().challenge(req);
    expect(c).toEqual({ challengeId: 'A'.repeat(43), credentialFile: Buffer.from('cred') });
    const last = seen.at(-1)!;
    expect(last.path).toBe('/.well-known/est/attest/challenge');
    expect(last.type).toBe('application/json');
    expect(last.auth).toBe(`Basic ${Buffer.from('dev-9:fgt_token').toString('base64')}`);
    expect(JSON.parse(last.body)).toEqual({
      ekCert: Buffer.from('cert').toString('base64'),
      ekPublic: Buffer.from('ekpub').toString('base64'),
      akPublic: Buffer.from('akpub').toString('base64'),
    });
    answer = { status: 200, body: JSON.stringify({ nonce: Buffer.alloc(32, 1).toString('base64') }) };
    expect((await exchange().activate('A'.repeat(43), Buffer.from('s'))).equals(Buffer.alloc(32, 1))).toBe(true);
    expect(JSON.parse(seen.at(-1)!.body)).toEqual({ challengeId: 'A'.repeat(43), secret: 'cw==' });
  });

  it.each([
    ['not JSON', '<html>'],
    ['a JSON array', '[]'],
    ['JSON null', 'null'],
    ['no challengeId', JSON.stringify({ credentialFile: 'AAAA' })],
    ['a challengeId with a quote', JSON.stringify({ challengeId: 'a"b', credentialFile: 'AAAA' })],
    ['no credentialFile', JSON.stringify({ challengeId: 'abc' })],
    ['credentialFile not base64', JSON.stringify({ challengeId: 'abc', credentialFile: 'A$A=' })],
    [
      'credentialFile of 5000 bytes',
      JSON.stringify({ challengeId: 'abc', credentialFile: Buffer.alloc(5000).toString('base64') }),
    ],
    ['credentialFile a number', JSON.stringify({ challengeId: 'abc', credentialFile: 7 })],
  ])('a challenge answer with %s is SERVER_ERROR', async (_what, body) => {
    answer = { status: 200, body };
    await expect(exchange().challenge(req)).rejects.toMatchObject({ code: 'SERVER_ERROR' });
  });

  it.each([
    ['no nonce', JSON.stringify({})],
    ['an empty nonce', JSON.stringify({ nonce: '' })],
    ['a 65-byte nonce', JSON.stringify({ nonce: Buffer.alloc(65).toString('base64') })],
  ])('an activate answer with %s is SERVER_ERROR', async (_what, body) => {
    answer = { status: 200, body };
    await expect(exchange().activate('abc', Buffer.from('s'))).rejects.toMatchObject({ code: 'SERVER_ERROR' });
  });

  it.each([
    [403, 'TPM_EK_UNTRUSTED'],
    [403, 'TPM_ACTIVATION_FAILED'],
    [400, 'TPM_CHALLENGE_INVALID'],
    [403, 'ATTESTATION_REQUIRED'],
    [401, 'TOKEN_INVALID'],
  ])('a %i %s refusal keeps the server code', async (status, code) => {
    answer = { status, body: JSON.stringify({ code, message: 'no' }) };
    await expect(exchange().challenge(req)).rejects.toMatchObject({ code, serverCode: code, status });
  });

  it('a 500 or a refusal with an unknown code is SERVER_ERROR / ENROLLMENT_REFUSED', async () => {
    answer = { status: 500, body: '{"code":"INTERNAL","message":"x"}' };
    await expect(exchange().challenge(req)).rejects.toMatchObject({ code: 'SERVER_ERROR' });
    answer = { status: 400, body: '{"code":"SOMETHING_NEW","message":"x"}' };
    await expect(exchange().activate('abc', Buffer.from('s'))).rejects.toMatchObject({
      code: 'ENROLLMENT_REFUSED',
      serverCode: 'SOMETHING_NEW',
    });
  });
});

describe('fleetgate-sim --key / --attest', () => {
  const parse = (...a: string[]) => parseArgs(['--scenario', 'enroll', ...a]);
  it('parses the TPM options', () => {
    const r = parse('--key', 'tpm', '--attest', '--tcti', 'tabrmd:bus_type=session', '--tpm-token', 'tok');
    expect(r).toMatchObject({
      options: { key: 'tpm', attest: true, tcti: 'tabrmd:bus_type=session', tpmToken: 'tok', tpmStore: undefined },
    });
    expect(parse()).toMatchObject({ options: { key: 'software', attest: false, tpmToken: 'fleetgate' } });
  });
  it.each([
    [['--attest'], /--attest needs --key tpm/],
    [['--key', 'hsm'], /--key must be one of software, tpm/],
    [['--tcti', 'x'], /--tcti applies to --key tpm only/],
    [['--key', 'tpm', '--tcti', 'bad tcti;rm'], /--tcti must look like/],
    [['--key', 'tpm', '--tpm-token', ''], /--tpm-token must be/],
    [['--key', 'tpm', '--tpm-module', ''], /--tpm-module must be a path/],
    [['--key', 'tpm', '--attest=yes'], /--attest takes no value/],
  ])('refuses %j', (args, message) => {
    expect(() => parse(...args)).toThrow(message);
    expect(() => parse(...args)).toThrow(UsageError);
  });
  it('keeps --key tpm to the enroll scenario', () => {
    expect(() => parseArgs(['--scenario', 'telemetry', '--key', 'tpm'])).toThrow(/enroll only/);
  });
});
