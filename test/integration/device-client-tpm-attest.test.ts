/**
 * The device client's TPM attestation against a real `fleetgate serve` (FLEETGATE_TPM_EK_ROOTS =
 * the test manufacturer of the swtpm): swtpm manufactured with `swtpm_setup --create-ek-cert`,
 * tpm2-abrmd, a tpm2-pkcs11 store. In a device process (OPENSSL_CONF preloads the pkcs11 engine)
 * the TpmKeyStore makes the key in the TPM, reads the EK certificate from NV, makes an AK, runs
 * the server's challenge through TPM2_ActivateCredential, certifies the key with the nonce and
 * enrolls with the evidence in the CSR; then connects to MQTT with that same key.
 *
 * Checked from outside the device: the certificate carries the tpm-attested policy as
 * `openssl x509 -text` prints it, the API and `devices show` say tpm-attested, the broker takes
 * the device's TLS key (the certificate's key). Refusals: a software key with a token that
 * requires attestation reports the server's ATTESTATION_REQUIRED; a TPM without an EK certificate
 * stops at the client's TPM_EK_CERT_MISSING before anything reaches the server; fleetgate-sim
 * enrolls one attested device.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AttestationExchange, collectTpmEvidence, DeviceClient, TpmTools } from '../../device-client/src/index.js';
import {
  makeCredential,
  parseTpm2bPublic,
  tpm2ToolsCredentialFile,
  tpmName,
  verifyCertifyEvidence,
} from '../../server/src/attest/index.js';
import { attestTools } from '../helpers/attest.js';
import { type CliResult, REPO_ROOT, runBin, runCli, tempDir } from '../helpers/cli.js';
import type { FleetgateEnv } from '../helpers/device-client-env.js';
import { agent } from '../helpers/device-client-token-flow.js';
import { OpensslDir } from '../helpers/openssl.js';
import { readTpmFile, type SoftTpm, startSoftTpm, tpmTool } from '../helpers/swtpm.js';
import { requireTool } from '../helpers/system-tools.js';
import {
  attestedToken as attestedTokenFor,
  certificatesOf as certificatesOfDevice,
  POLICY_TPM_ATTESTED,
  startAttestFleetgate,
} from '../helpers/tpm-attest-fleet.js';
import { waitFor } from '../helpers/wait.js';

const SIM_BIN = path.join(REPO_ROOT, 'firmware-sim/bin/fleetgate-sim.js');

const tools = attestTools('tpm2_send', 'tpm2_nvread', 'tpm2_evictcontrol') && requireTool('tpm2_ptool');

type Line = Record<string, unknown>;

describe.runIf(tools)('device client TPM attestation (swtpm + tpm2-abrmd + tpm2-pkcs11, fleetgate serve)', () => {
  let tpm: SoftTpm;
  let bare: SoftTpm;
  let env: FleetgateEnv;
  let ossl: OpensslDir;
  let caFile: string;

  beforeAll(async () => {
    [tpm, bare] = await Promise.all([
      startSoftTpm('fg-attest-dev', '1234', { ekCert: true }),
      // Not manufactured: no EK certificate in NV.
      startSoftTpm('fg-attest-bare', '1234'),
    ]);
    ({ env, caFile } = await startAttestFleetgate(tpm, 'fg-dc-attest-ca-'));
    ossl = new OpensslDir('fg-dc-attest-ossl-');
  }, 180_000);

  afterAll(async () => {
    await env?.stop();
    await tpm?.stop();
    await bare?.stop();
    ossl?.cleanup();
  });

  const attestedToken = (deviceId: string) => attestedTokenFor(env, deviceId);
  const certificatesOf = (deviceId: string) =>
    certificatesOfDevice<{ keyAssurance: string; serial: string }>(env, deviceId);

  const device = (t: SoftTpm, deviceId: string, dir: string, steps: string[], tag: string) =>
    agent({
      env,
      deviceId,
      dir,
      caFile,
      steps,
      tag,
      pkcs11: { module: t.module, token: t.token, pin: t.pin },
      childEnv: t.env,
      tpm: { attest: true, tcti: t.env.TPM2TOOLS_TCTI, store: t.env.TPM2_PKCS11_STORE },
    });

  /** The `code` of a device process that failed (agent.mjs prints it as JSON). */
  async function failureOf(run: Promise<Line[]>): Promise<{ code: string; message: string }> {
    const e = await run.then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(e, 'the device process should have failed').toBeInstanceOf(Error);
    const m = /\{"failed":true,"code":"([A-Z0-9_]+)","message":"((?:[^"\\]|\\.)*)"/.exec(String(e?.message));
    expect(m, String(e?.message)).not.toBeNull();
    return { code: m![1]!, message: JSON.parse(`"${m![2]!}"`) as string };
  }

  it('enrolls a TPM-attested device: the policy in the certificate, tpm-attested in the API and CLI, MQTT with that key', async () => {
    const deviceId = 'tpm-attested-1';
    const token = await attestedToken(deviceId);
    const dir = tempDir('fg-dc-attest-');
    const observer = await env.observe(`devices/${deviceId}/#`);
    const lines = await device(tpm, deviceId, dir, [`enroll:${token}`, 'connect', 'publish:2'], 'att');
    const enrolled = lines.find((l) => l.step === 'enroll')!;
    expect(enrolled.key).toMatchObject({ type: 'pkcs11' });
    // The broker accepted the TLS key of the token: the certificate's key (mTLS), and the messages arrive.
    expect(lines.find((l) => l.step === 'connect')).toMatchObject({ serial: enrolled.serial });
    await waitFor('both messages at the backend', () => {
      const got = new Set(observer.messages.map((m) => m.payload));
      return got.has('att-0') && got.has('att-1') ? true : undefined;
    });
    await observer.close();

    const credential = JSON.parse(readFileSync(path.join(dir, 'credential.json'), 'utf8')) as { certificate: string };
    ossl.write('attested.pem', credential.certificate);
    const text = ossl.ok(['x509', '-in', 'attested.pem', '-noout', '-text']).stdout;
    expect(text).toMatch(/X509v3 Certificate Policies: ?\n\s+Policy: (\S+)\n/);
    expect(/Policy: (\S+)/.exec(text)?.[1]).toBe(POLICY_TPM_ATTESTED);

    expect(await certificatesOf(deviceId)).toEqual([
      expect.objectContaining({ keyAssurance: 'tpm-attested', serial: enrolled.serial }),
    ]);
    const shown = await runCli(['devices', 'show', deviceId], env.env);
    expect(shown.stdout).toMatch(/^key\s+tpm-attested$/m);
    // The temporary persistent copies of the key and the AK are gone again.
    expect(tpm.tools('tpm2_getcap', ['handles-persistent'])).not.toMatch(/0x8100F0/i);
  });

  it('a software key with a token requiring attestation is refused with the server code ATTESTATION_REQUIRED', async () => {
    const deviceId = 'soft-needs-tpm';
    const token = await attestedToken(deviceId);
    const client = new DeviceClient({
      deviceId,
      credentialDir: tempDir('fg-dc-attest-soft-'),
      ca: env.bundle,
      estUrl: env.apiUrl,
    });
    try {
      const e = await client.enroll(token).then(
        () => undefined,
        (err: unknown) => err as { code?: string; serverCode?: string; status?: number },
      );
      expect(e).toMatchObject({ code: 'ATTESTATION_REQUIRED', serverCode: 'ATTESTATION_REQUIRED', status: 403 });
    } finally {
      await client.close();
    }
    expect(await certificatesOf(deviceId)).toEqual([]);
  });

  it('a TPM without an EK certificate in NV stops at TPM_EK_CERT_MISSING (step ek-certificate), nothing issued', async () => {
    const deviceId = 'tpm-no-ek-cert';
    const token = await attestedToken(deviceId);
    const dir = tempDir('fg-dc-attest-bare-');
    const f = await failureOf(device(bare, deviceId, dir, [`enroll:${token}`], 'bare'));
    expect(f.code).toBe('TPM_EK_CERT_MISSING');
    expect(f.message).toMatch(/step "ek-certificate".*0x1c00002/);
    expect(await certificatesOf(deviceId)).toEqual([]);
    // The key made for the failed enrollment was removed from the token again.
    expect(bare.tools('tpm2_ptool', ['listobjects', `--label=${bare.token}`])).not.toMatch(/tpm-no-ek-cert/);
  });

  // Three devices of one process on one TPM: key generation through tpm2-pkcs11 runs on parallel
  // threads (CKF_OS_LOCKING_OK) and the attestations take turns (without either, measured: 4 of 5
  // devices failed with PKCS11_ERROR / TPM_ERROR).
  it('fleetgate-sim --key tpm --attest enrolls three TPM-attested devices of one process against the swtpm', async () => {
    const simDir = tempDir('fg-sim-attest-');
    const r: CliResult = await runBin(
      SIM_BIN,
      [
        '--scenario',
        'enroll',
        '--devices',
        '3',
        '--prefix',
        'simtpm',
        '--dir',
        simDir,
        '--key',
        'tpm',
        '--attest',
        '--tpm-module',
        tpm.module,
        '--tpm-token',
        tpm.token,
        '--tcti',
        tpm.env.TPM2TOOLS_TCTI!,
        '--json',
      ],
      { ...env.env, ...tpm.env, FLEETGATE_SIM_TPM_PIN: tpm.pin },
      { timeoutMs: 120_000 },
    );
    const result = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(result).toMatchObject({ scenario: 'enroll', ok: 3, failed: 0, keyStore: 'tpm', attested: 3 });
    for (const id of ['simtpm-000000', 'simtpm-000001', 'simtpm-000002']) {
      // Progress names the attestation steps of each device.
      expect(r.stderr).toMatch(new RegExp(`^${id}: TPM attestation: certify$`, 'm'));
      expect(await certificatesOf(id)).toEqual([expect.objectContaining({ keyAssurance: 'tpm-attested' })]);
    }
  });
});

/**
 * collectTpmEvidence on its own against swtpm, with the server's MakeCredential and Certify
 * verification (server/src/attest) standing in for the HTTP routes: the evidence verifies and
 * carries the nonce; a credential the TPM cannot open, a wrong key auth value and a server refusal
 * at activation each stop at their own step, and the temporary persistent handles are gone after
 * every outcome.
 */
describe.runIf(tools)('collectTpmEvidence (swtpm, the server crypto as the counterpart)', () => {
  let tpm: SoftTpm;
  let tpmTools: TpmTools;
  const PARENT = 0x81000050;
  const AUTH = 'key-auth-1';

  beforeAll(async () => {
    tpm = await startSoftTpm('fg-collect', '1234', { ekCert: true, pkcs11: false });
    tpmTool(tpm, 'tpm2_createprimary', '-C', 'o', '-g', 'sha256', '-G', 'ecc', '-c', 'parent.ctx');
    tpmTool(tpm, 'tpm2_evictcontrol', '-C', 'o', '-c', 'parent.ctx', `0x${PARENT.toString(16)}`);
    tpmTool(
      tpm,
      'tpm2_create',
      '-C',
      `0x${PARENT.toString(16)}`,
      '-G',
      'ecc256:null',
      '-a',
      'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign',
      '-p',
      AUTH,
      '-u',
      'dev.pub',
      '-r',
      'dev.priv',
    );
    tpmTools = new TpmTools({ tcti: tpm.env.TPM2TOOLS_TCTI, env: tpm.env });
  }, 120_000);
  afterAll(async () => {
    await tpm?.stop();
  });

  const blobs = (auth = AUTH) => ({
    public: readTpmFile(tpm, 'dev.pub'),
    private: readTpmFile(tpm, 'dev.priv'),
    auth: Buffer.from(auth),
    parent: PARENT,
  });
  const persistent = () => tpm.tools('tpm2_getcap', ['handles-persistent']);

  /** The server's side, in process: MakeCredential to the EK for the AK's Name, then a nonce. */
  function fakeServer(opts: { garbleCredential?: boolean; refuseActivation?: Error } = {}) {
    const secret = randomBytes(32);
    const nonce = randomBytes(32);
    const seen: { akPublic?: Buffer; steps: string[] } = { steps: [] };
    const exchange: AttestationExchange = {
      async challenge(req) {
        seen.akPublic = req.akPublic;
        expect(req.ekCert[0]).toBe(0x30);
        const made = makeCredential(parseTpm2bPublic(req.ekPublic), tpmName(parseTpm2bPublic(req.akPublic)), secret);
        const file = tpm2ToolsCredentialFile(made);
        if (opts.garbleCredential) file[file.length - 5]! ^= 0xff;
        return { challengeId: 'c1', credentialFile: file };
      },
      async activate(_id, got) {
        if (opts.refuseActivation) throw opts.refuseActivation;
        expect(got.equals(secret)).toBe(true);
        return nonce;
      },
    };
    return { exchange, nonce, seen };
  }

  const workDir = () => tempDir('fg-collect-work-');

  it('produces evidence the server verifies: signed by the activated AK, extraData = nonce, the key certified', async () => {
    const before = persistent();
    const server = fakeServer();
    const steps: string[] = [];
    const ev = await collectTpmEvidence(tpmTools, blobs(), server.exchange, {
      workDir: workDir(),
      onStep: (s) => steps.push(s),
    });
    expect(steps).toEqual([
      'ek-certificate',
      'ek',
      'ak',
      'challenge',
      'activate-credential',
      'activate',
      'load-key',
      'persist',
      'certify',
    ]);
    const attest = verifyCertifyEvidence({
      akPublic: parseTpm2bPublic(server.seen.akPublic!),
      attest: ev.attest,
      signature: ev.signature,
    });
    expect(attest.extraData.equals(server.nonce)).toBe(true);
    expect(attest.certify.name.equals(tpmName(parseTpm2bPublic(ev.keyPublic)))).toBe(true);
    expect(persistent()).toBe(before);
  });

  it('a credential the TPM cannot open stops at activate-credential (TPM_ERROR), before any nonce', async () => {
    const before = persistent();
    const e = await collectTpmEvidence(tpmTools, blobs(), fakeServer({ garbleCredential: true }).exchange, {
      workDir: workDir(),
    }).catch((err: unknown) => err as { code: string; step: string });
    expect(e).toMatchObject({ code: 'TPM_ERROR', step: 'activate-credential' });
    expect(persistent()).toBe(before);
  });

  it('a wrong key auth value stops at certify with the TPM error code; the scratch handles are evicted', async () => {
    const before = persistent();
    const e = await collectTpmEvidence(tpmTools, blobs('wrong'), fakeServer().exchange, {
      workDir: workDir(),
    }).then(
      () => undefined,
      (err: unknown) => err as { code: string; step: string; message: string },
    );
    expect(e).toMatchObject({ code: 'TPM_ERROR', step: 'certify' });
    expect(e?.message).toMatch(/TPM_RC 0x9[0-9a-f]{2}/);
    expect(persistent()).toBe(before);
  });

  it("the server's refusal at activation comes out unchanged", async () => {
    const refusal = Object.assign(new Error('refused'), { code: 'TPM_ACTIVATION_FAILED' });
    await expect(
      collectTpmEvidence(tpmTools, blobs(), fakeServer({ refuseActivation: refusal }).exchange, { workDir: workDir() }),
    ).rejects.toBe(refusal);
  });
});
