/**
 * The device client's renewal with fresh TPM evidence, over HTTP against `fleetgate serve`
 * (FLEETGATE_TPM_EK_ROOTS = the swtpm's test manufacturer), in device processes with the TPM key
 * store (swtpm manufactured with `swtpm_setup --create-ek-cert`, tpm2-abrmd, tpm2-pkcs11; the
 * pkcs11 engine signs every TLS handshake in the TPM). docs/attestation.md "Renewal".
 *
 * A device enrolled tpm-attested by the client renews through `DeviceClient.renew()`: the new key
 * is made in the TPM, `attest/challenge` and `attest/activate` go over mTLS with the current
 * certificate (the renewal has no token, so the server can only have taken that branch), the new
 * key is certified with the nonce and `simplereenroll` returns a certificate with the
 * tpm-attested policy (`openssl x509 -text`), `keyAssurance: tpm-attested` in the API, a new
 * serial renewed from the old one, the old certificate left as the server defines it (valid until
 * it expires, not revoked); the session switches to the new key, a rebooted process connects with
 * it, and the old key is gone from the TPM. The automatic renewal takes the same path.
 *
 * Refused renewals of a device whose token required attestation: the TPM cannot open a garbled
 * credential (TpmError TPM_ERROR at step activate-credential), the server refuses a wrong secret
 * (TPM_ACTIVATION_FAILED), a key store without attestation gets ATTESTATION_REQUIRED; after each
 * the device keeps its certificate and key (still connects with them, nothing pending), the key
 * made for the attempt is removed from the token, no certificate is issued, and a later renewal
 * with good evidence works. This is the renewal from a tpm-attested certificate over HTTP that
 * attest-renewal-http.test.ts could not do (Node's TLS there signs with a key in memory).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attestTools } from '../helpers/attest.js';
import { runCli, tempDir } from '../helpers/cli.js';
import type { FleetgateEnv } from '../helpers/device-client-env.js';
import { OpensslDir } from '../helpers/openssl.js';
import { type SoftTpm, startSoftTpm } from '../helpers/swtpm.js';
import { requireTool } from '../helpers/system-tools.js';
import {
  attestedToken as attestedTokenFor,
  certificatesOf as certificatesOfDevice,
  POLICY_TPM_ATTESTED,
  startAttestFleetgate,
} from '../helpers/tpm-attest-fleet.js';
import { type Line, stepLine, type TpmRenewAgentOptions, tpmRenewAgent } from '../helpers/tpm-renew-agent.js';
import { waitFor } from '../helpers/wait.js';

const tools = attestTools('tpm2_send', 'tpm2_nvread', 'tpm2_evictcontrol') && requireTool('tpm2_ptool');

interface CertJson {
  serial: string;
  keyAssurance: string;
  status: string;
  revokedAt: string | null;
  renewedFrom: string | null;
}

describe.runIf(tools)('device client renewal with fresh TPM evidence (swtpm, fleetgate serve)', () => {
  let tpm: SoftTpm;
  let env: FleetgateEnv;
  let ossl: OpensslDir;
  let caFile: string;

  beforeAll(async () => {
    tpm = await startSoftTpm('fg-renew-dev', '1234', { ekCert: true });
    ({ env, caFile } = await startAttestFleetgate(tpm, 'fg-dc-renew-ca-'));
    ossl = new OpensslDir('fg-dc-renew-ossl-');
  }, 180_000);

  afterAll(async () => {
    await env?.stop();
    await tpm?.stop();
    ossl?.cleanup();
  });

  const attestedToken = (deviceId: string) => attestedTokenFor(env, deviceId);
  const certificatesOf = (deviceId: string) => certificatesOfDevice<CertJson>(env, deviceId);

  /** The labels of this device's key objects on the TPM token (private and public share one). */
  function tokenKeys(deviceId: string): string[] {
    const listed = tpm.tools('tpm2_ptool', ['listobjects', `--label=${tpm.token}`]);
    return [...new Set(listed.match(new RegExp(`fleetgate-${deviceId}-[0-9a-f]+`, 'g')) ?? [])].sort();
  }
  const labelOf = (key: unknown) => decodeURIComponent(/object=([^;]+)/.exec((key as { uri: string }).uri)![1]!);

  const run = (o: Omit<TpmRenewAgentOptions, 'env' | 'tpm' | 'caFile'>) => tpmRenewAgent({ env, tpm, caFile, ...o });

  function policyOf(dir: string): string | undefined {
    const credential = JSON.parse(readFileSync(path.join(dir, 'credential.json'), 'utf8')) as { certificate: string };
    ossl.write('leaf.pem', credential.certificate);
    const text = ossl.ok(['x509', '-in', 'leaf.pem', '-noout', '-text']).stdout;
    return /X509v3 Certificate Policies: ?\n\s+Policy: (\S+)\n/.exec(text)?.[1];
  }

  /** The temporary persistent copies of key and AK (0x8100F0xx) are evicted after every attempt. */
  const expectNoScratchHandles = () =>
    expect(tpm.tools('tpm2_getcap', ['handles-persistent'])).not.toMatch(/0x8100F0/i);

  it('a tpm-attested device renews with fresh evidence over mTLS: policy kept, new serial, MQTT with the new key, old key gone', async () => {
    const deviceId = 'tpm-renew-1';
    const token = await attestedToken(deviceId);
    const dir = tempDir('fg-dc-renew-');
    const observer = await env.observe(`devices/${deviceId}/#`);
    const lines = await run({
      deviceId,
      dir,
      tag: 'a',
      steps: [`enroll:${token}`, 'connect', 'publish:1', 'renew', 'reconnect', 'publish:2', 'state'],
    });
    const enrolled = stepLine(lines, 'enroll');
    expect(enrolled.attestations).toHaveLength(1);
    const renewed = stepLine(lines, 'renew');
    expect(renewed.serial).not.toBe(enrolled.serial);
    expect(renewed.key).not.toEqual(enrolled.key);
    // Both attestation round trips went out for the renewal (authenticated by the certificate:
    // the device has no token any more) and the evidence was accepted.
    expect(renewed.attestations).toEqual([{ challenge: true, activate: true }]);
    // The session switched to the new certificate (the TPM key signed that handshake).
    expect(stepLine(lines, 'reconnect')).toMatchObject({ serial: renewed.serial });
    expect(stepLine(lines, 'state')).toMatchObject({
      serial: renewed.serial,
      key: renewed.key,
      keyLoads: true,
      pending: false,
    });
    expect(lines.at(-1)).toMatchObject({ done: true, errors: [] });
    await waitFor('the messages before and after the renewal at the backend', () => {
      const got = new Set(observer.messages.map((m) => m.payload));
      return ['a-0', 'a-1'].every((m) => got.has(m)) && observer.messages.length >= 3 ? true : undefined;
    });
    await observer.close();

    expect(policyOf(dir)).toBe(POLICY_TPM_ATTESTED);
    const certs = await certificatesOf(deviceId);
    expect(certs).toHaveLength(2);
    const old = certs.find((c) => c.serial === enrolled.serial)!;
    const fresh = certs.find((c) => c.serial === renewed.serial)!;
    expect(fresh).toMatchObject({ keyAssurance: 'tpm-attested', renewedFrom: enrolled.serial, revokedAt: null });
    // The old certificate stays valid until it expires (server/src/enrollment/renewal.ts): the
    // device switched only once it had the new one stored.
    expect(old).toMatchObject({ keyAssurance: 'tpm-attested', status: fresh.status, revokedAt: null });
    const shown = await runCli(['devices', 'show', deviceId], env.env);
    expect(shown.stdout).toMatch(/^key\s+tpm-attested$/m);

    // The old key was removed from the TPM after the new certificate was stored; the new one is there.
    expect(tokenKeys(deviceId)).toEqual([labelOf(renewed.key)]);
    expectNoScratchHandles();

    // Reboot: a new process connects to MQTT with the renewed certificate and its TPM key.
    const reboot = await run({ deviceId, dir, tag: 'b', steps: ['connect', 'publish:1'] });
    expect(stepLine(reboot, 'connect')).toMatchObject({ serial: renewed.serial });
  });

  it('the automatic renewal takes the same path: fresh evidence, tpm-attested', async () => {
    const deviceId = 'tpm-renew-auto';
    const token = await attestedToken(deviceId);
    const dir = tempDir('fg-dc-renew-auto-');
    const lines = await run({
      deviceId,
      dir,
      tag: 'auto',
      autoRenew: true,
      steps: [`enroll:${token}`, 'connect', 'autoRenewed', 'state'],
    });
    const enrolled = stepLine(lines, 'enroll');
    const auto = stepLine(lines, 'autoRenewed') as {
      renewed?: { serial: string; previousSerial: string };
      attestations: unknown;
    };
    expect(auto.renewed, JSON.stringify(lines)).toMatchObject({ previousSerial: enrolled.serial });
    expect(auto.attestations).toEqual([{ challenge: true, activate: true }]);
    expect(stepLine(lines, 'state')).toMatchObject({ serial: auto.renewed!.serial, pending: false });
    expect(policyOf(dir)).toBe(POLICY_TPM_ATTESTED);
    expect(await certificatesOf(deviceId)).toContainEqual(
      expect.objectContaining({
        serial: auto.renewed!.serial,
        keyAssurance: 'tpm-attested',
        renewedFrom: enrolled.serial,
      }),
    );
    expect(tokenKeys(deviceId)).toEqual([labelOf(stepLine(lines, 'state').key)]);
  });

  it('a renewal whose evidence step fails is refused with its code; the device keeps its certificate and key', async () => {
    const deviceId = 'tpm-renew-refused';
    const token = await attestedToken(deviceId);
    const dir = tempDir('fg-dc-renew-refused-');
    const lines = await run({
      deviceId,
      dir,
      tag: 'r',
      steps: [
        `enroll:${token}`,
        'connect',
        'sabotage:credential',
        'renewFails',
        'sabotage:secret',
        'renewFails',
        'state',
        // Still admitted by the broker with the current certificate and TPM key.
        'reconnect',
        'publish:1',
      ],
    });
    const enrolled = stepLine(lines, 'enroll');
    // The TPM could not open the garbled credential: the client's own TpmError, before any nonce.
    expect(stepLine(lines, 'renewFails', 0)).toMatchObject({
      code: 'TPM_ERROR',
      tpmStep: 'activate-credential',
      attestations: [{ challenge: true, activate: false }],
    });
    // The server refused the wrong secret, with its code and status.
    expect(stepLine(lines, 'renewFails', 1)).toMatchObject({
      code: 'TPM_ACTIVATION_FAILED',
      serverCode: 'TPM_ACTIVATION_FAILED',
      status: 403,
      attestations: [{ challenge: true, activate: true }],
    });
    expect(stepLine(lines, 'state')).toMatchObject({
      serial: enrolled.serial,
      key: enrolled.key,
      keyLoads: true,
      pending: false,
    });
    expect(stepLine(lines, 'reconnect')).toMatchObject({ serial: enrolled.serial });

    // A key store that does not attest (the plain tpm2-pkcs11 store) sends no evidence: the token
    // required attestation and the certificate is tpm-attested, so the server refuses.
    const plain = await run({ deviceId, dir, tag: 'p', attest: false, steps: ['renewFails', 'state'] });
    expect(stepLine(plain, 'renewFails')).toMatchObject({
      code: 'ATTESTATION_REQUIRED',
      serverCode: 'ATTESTATION_REQUIRED',
      status: 403,
      attestations: [],
    });
    expect(stepLine(plain, 'state')).toMatchObject({ serial: enrolled.serial, key: enrolled.key, keyLoads: true });

    // Nothing issued, nothing lost: one certificate, and on the token only the current key (the
    // keys made for the three attempts were removed again).
    expect(await certificatesOf(deviceId)).toEqual([
      expect.objectContaining({ serial: enrolled.serial, keyAssurance: 'tpm-attested', revokedAt: null }),
    ]);
    expect(tokenKeys(deviceId)).toEqual([labelOf(enrolled.key)]);
    expectNoScratchHandles();

    // And the device can still renew with good evidence afterwards.
    const again: Line[] = await run({ deviceId, dir, tag: 'g', steps: ['renew', 'state'] });
    const renewed = stepLine(again, 'renew');
    expect(renewed.serial).not.toBe(enrolled.serial);
    expect(policyOf(dir)).toBe(POLICY_TPM_ATTESTED);
    expect(tokenKeys(deviceId)).toEqual([labelOf(renewed.key)]);
  });
});
