/**
 * The shared setup of the device-client TPM attestation tests: `fleetgate serve` trusting a
 * swtpm's test manufacturer (FLEETGATE_TPM_EK_ROOTS), its CA bundle in a file for the device
 * processes, tokens that require attestation, and a device's certificates as the API lists them.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { runCli, tempDir } from './cli.js';
import { type FleetgateEnv, startFleetgate } from './device-client-env.js';
import { httpsRequest } from './https.js';
import type { SoftTpm } from './swtpm.js';

/** The tpm-attested certificate policy OID (docs/attestation.md), written out as a device sees it. */
export const POLICY_TPM_ATTESTED = '2.25.127469064901324527733723878858303000103.1.1';

/** `fleetgate serve` trusting `tpm`'s EK manufacturer, and a file (in a tempDir `caPrefix`) with its CA bundle. */
export async function startAttestFleetgate(
  tpm: SoftTpm,
  caPrefix: string,
): Promise<{ env: FleetgateEnv; caFile: string }> {
  const roots = path.join(tpm.dir, 'ek-roots.pem');
  writeFileSync(roots, `${tpm.ekRootPem!}\n${tpm.ekIssuerPem!}`);
  const env = await startFleetgate({ FLEETGATE_TPM_EK_ROOTS: roots });
  const caFile = path.join(tempDir(caPrefix), 'ca.pem');
  writeFileSync(caFile, env.bundle);
  return { env, caFile };
}

/** An enrollment token for `deviceId` that requires TPM attestation (`fleetgate token create`). */
export async function attestedToken(env: FleetgateEnv, deviceId: string): Promise<string> {
  const r = await runCli(['token', 'create', '--device', deviceId, '--require-attestation', 'tpm', '--json'], env.env);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { token: string }[])[0]!.token;
}

/** The device's certificates from GET /api/v1/devices/:id (none for an unknown device). */
export async function certificatesOf<T>(env: FleetgateEnv, deviceId: string): Promise<T[]> {
  const admin = readFileSync(path.join(env.env.FLEETGATE_DATA_DIR!, 'operator.token'), 'utf8').trim();
  const r = await httpsRequest(`${env.apiUrl}/api/v1/devices/${deviceId}`, {
    ca: env.bundle,
    headers: { authorization: `Bearer ${admin}` },
  });
  if (r.status === 404) return [];
  expect(r.status, r.body.toString()).toBe(200);
  return r.json<{ certificates: T[] }>().certificates;
}
