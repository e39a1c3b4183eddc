/**
 * TPM 2.0 key (swtpm + tpm2-abrmd + tpm2-pkcs11, started here): the same end-to-end flow as the
 * software and SoftHSM2 keys, in device processes. The key is made in the TPM, non-extractable;
 * TLS signs through OpenSSL's pkcs11 engine and tpm2-pkcs11.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FleetgateEnv, startFleetgate } from '../helpers/device-client-env.js';
import { runTokenFlow } from '../helpers/device-client-token-flow.js';
import { type SoftTpm, startSoftTpm } from '../helpers/swtpm.js';
import { requireTool } from '../helpers/system-tools.js';

const tools =
  requireTool('openssl') &&
  requireTool('swtpm') &&
  requireTool('tpm2-abrmd') &&
  requireTool('dbus-daemon') &&
  requireTool('tpm2_ptool');

describe.runIf(tools)('device client with a TPM 2.0 key (tpm2-pkcs11)', () => {
  let env: FleetgateEnv;
  let tpm: SoftTpm;

  beforeAll(async () => {
    tpm = await startSoftTpm('fg-tpm');
    env = await startFleetgate();
    console.info(`device-client test broker: ${env.broker} at ${env.mqttUrl}`);
  });
  afterAll(async () => {
    await env?.stop();
    await tpm?.stop();
  });

  it('enrolls, connects, publishes, renews, resumes after reboot and stops when revoked', async () => {
    const { firstKey, renewedKey } = await runTokenFlow({
      env,
      deviceId: 'tpm-dev-1',
      pkcs11: { module: tpm.module, token: tpm.token, pin: tpm.pin },
      childEnv: tpm.env,
    });
    expect(firstKey).not.toEqual(renewedKey);
  });
});
