/**
 * The end-to-end flow for token keys (SoftHSM2, TPM via tpm2-pkcs11), run in device processes
 * (test/fixtures/device-client/agent.mjs on the compiled library): each process gets
 * OPENSSL_CONF preloading the pkcs11 engine, which must be set before node starts. A second
 * process on the same directory is the reboot; a third waits to be revoked.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { agentConfig, type Line, runAgentProcess, stepLine as step } from './agent-process.js';
import { REPO_ROOT, tempDir } from './cli.js';
import type { FleetgateEnv } from './device-client-env.js';
import { waitFor } from './wait.js';

const AGENT = path.join(REPO_ROOT, 'test/fixtures/device-client/agent.mjs');

export interface TokenFlowOptions {
  env: FleetgateEnv;
  deviceId: string;
  pkcs11: { module: string; token: string; pin: string };
  /** Extra environment of the device processes (SOFTHSM2_CONF, TPM2_PKCS11_TCTI, ...). */
  childEnv: Record<string, string>;
  /** TpmKeyStore options (attest, tcti, ...): the device uses the TPM key store instead of pkcs11. */
  tpm?: Record<string, unknown>;
}

export function agent(
  opts: TokenFlowOptions & { dir: string; caFile: string; steps: string[]; tag: string },
  onLine?: (line: Line) => void,
): Promise<Line[]> {
  const cfg = { ...agentConfig(opts), pkcs11: opts.pkcs11, ...(opts.tpm ? { tpm: opts.tpm } : {}) };
  return runAgentProcess({
    script: AGENT,
    cfg,
    env: opts.childEnv,
    confPrefix: 'fg-dc-ossl-',
    timeoutMs: 90_000,
    onLine,
  });
}

export async function runTokenFlow(opts: TokenFlowOptions): Promise<{ firstKey: unknown; renewedKey: unknown }> {
  const { env, deviceId } = opts;
  const dir = tempDir('fg-dc-token-');
  // Outside the credential dir, in a temp dir of its own (removed after the file like every tempDir).
  const caFile = path.join(tempDir('fg-dc-ca-'), 'ca.pem');
  writeFileSync(caFile, env.bundle);
  const observer = await env.observe(`devices/${deviceId}/#`);
  const token = await env.token(deviceId);

  const first = await agent({
    ...opts,
    dir,
    caFile,
    tag: 'a',
    steps: [
      `enroll:${token}`,
      'extractable',
      'connect',
      'publish:3',
      'waitTicket',
      'reconnect',
      'renew',
      'waitTicket',
      'reconnect',
    ],
  });
  const enrolled = step(first, 'enroll');
  expect(step(first, 'extractable')).toMatchObject({ extractable: false, tokenSays: false, exported: false });
  expect(step(first, 'connect')).toMatchObject({ resumed: false, serial: enrolled.serial });
  expect(step(first, 'reconnect', 0)).toMatchObject({ resumed: true, serial: enrolled.serial });
  const renewed = step(first, 'renew');
  expect(renewed.serial).not.toBe(enrolled.serial);
  expect(renewed.key).not.toEqual(enrolled.key);
  expect(step(first, 'reconnect', 1)).toMatchObject({ resumed: true, serial: renewed.serial });
  const expected = [...[0, 1, 2].map((i) => `a-${i}`), ...Array.from({ length: 20 }, (_, i) => `a-r${i}`)];
  await waitFor('every message at the backend', () => {
    const got = new Set(observer.messages.map((m) => m.payload));
    return expected.every((m) => got.has(m)) ? true : undefined;
  });
  await observer.close();

  // Reboot: a new process, same directory, resumes with the renewed certificate.
  const reboot = await agent({ ...opts, dir, caFile, tag: 'b', steps: ['connect'] });
  expect(step(reboot, 'connect')).toMatchObject({ resumed: true, serial: renewed.serial });

  // Revoked while connected: reported, stopped, no retries.
  const revokedRun = agent({ ...opts, dir, caFile, tag: 'c', steps: ['connect', 'waitRevoked'] }, (line) => {
    if (line.step === 'ready') void env.revoke(deviceId);
  });
  const lines = await revokedRun;
  expect(step(lines, 'waitRevoked')).toMatchObject({
    serial: renewed.serial,
    stoppedCode: 'DEVICE_REVOKED',
    attemptsAfterStop: 0,
  });
  return { firstKey: enrolled.key, renewedKey: renewed.key };
}
