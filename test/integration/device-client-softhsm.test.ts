/**
 * SoftHSM2 key, the same end-to-end flow as the software key: the key is generated on the token,
 * non-extractable (CKA_EXTRACTABLE false, export refused, private key CKA_SENSITIVE); TLS runs
 * through OpenSSL's pkcs11 engine and the CSR is signed on the token.
 */
import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCsr, Pkcs11KeyStore, parsePkcs11Uri } from '../../device-client/src/index.js';
import { type FleetgateEnv, startFleetgate } from '../helpers/device-client-env.js';
import { runTokenFlow } from '../helpers/device-client-token-flow.js';
import { createSoftHsmToken, type SoftHsmToken } from '../helpers/softhsm.js';
import { requireTool } from '../helpers/system-tools.js';

const tools = requireTool('openssl') && requireTool('softhsm2-util') && requireTool('pkcs11-tool');

describe.runIf(tools)('device client with a SoftHSM2 key', () => {
  let env: FleetgateEnv;
  let token: SoftHsmToken;

  beforeAll(async () => {
    token = createSoftHsmToken('fg-softhsm');
    env = await startFleetgate();
    console.info(`device-client test broker: ${env.broker} at ${env.mqttUrl}`);
  });
  afterAll(async () => {
    await env?.stop();
  });

  it('runs the whole flow with the key on the token, never extractable (device processes)', async () => {
    const deviceId = 'hsm-dev-1';
    const { firstKey, renewedKey } = await runTokenFlow({
      env,
      deviceId,
      pkcs11: { module: token.module, token: token.token, pin: token.pin },
      childEnv: { SOFTHSM2_CONF: token.conf },
    });
    // What the token itself says, read with OpenSC's pkcs11-tool: only the renewed key is left,
    // sensitive and never extractable; the first key was destroyed after the renewal.
    const listed = execFileSync(
      'pkcs11-tool',
      [
        '--module',
        token.module,
        '--token-label',
        token.token,
        '--login',
        '--pin',
        token.pin,
        '--list-objects',
        '--type',
        'privkey',
      ],
      { encoding: 'utf8', env: { ...process.env, SOFTHSM2_CONF: token.conf } },
    );
    const label = (k: unknown) => parsePkcs11Uri((k as { uri: string }).uri).object ?? '';
    expect(listed).not.toContain(`label:      ${label(firstKey)}\n`);
    const block =
      listed.split(/\n(?=Private Key Object)/).find((b) => b.includes(`label:      ${label(renewedKey)}`)) ?? '';
    const access = (/Access:\s*(.*)/.exec(block)?.[1] ?? '').split(/,\s*/);
    expect(access).toContain('sensitive');
    expect(access).toContain('never extractable');
    expect(access).not.toContain('extractable');
  });

  it('signs the CSR on the token in this process, and a wrong PIN is PKCS11_PIN_INCORRECT', async () => {
    const store = new Pkcs11KeyStore({ module: token.module, token: token.token, pin: token.pin });
    const key = await store.generate({ deviceId: 'hsm-csr' });
    const csr = new x509.Pkcs10CertificateRequest(await createCsr('hsm-csr', key));
    expect(await csr.verify()).toBe(true);
    expect(key.keys.privateKey.extractable).toBe(false);
    await expect(key.crypto.subtle.exportKey('pkcs8', key.keys.privateKey)).rejects.toThrow();
    await store.remove(key.ref);
    await store.close();
    const wrong = new Pkcs11KeyStore({ module: token.module, token: token.token, pin: '0000' });
    await expect(wrong.generate({ deviceId: 'x' })).rejects.toMatchObject({ code: 'PKCS11_PIN_INCORRECT' });
    const noToken = new Pkcs11KeyStore({ module: token.module, token: 'no-such-token', pin: token.pin });
    await expect(noToken.generate({ deviceId: 'x' })).rejects.toMatchObject({ code: 'PKCS11_TOKEN_NOT_FOUND' });
  });
});
