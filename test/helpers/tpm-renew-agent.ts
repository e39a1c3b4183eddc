/**
 * Runs test/fixtures/device-client/tpm-renew-agent.mjs: a device process with the TPM key store
 * on the compiled device-client (agent-process.ts). Resolves to its JSON lines when it exits 0;
 * rejects with every line and its stderr otherwise.
 */
import path from 'node:path';
import { agentConfig, type Line, runAgentProcess } from './agent-process.js';
import { REPO_ROOT } from './cli.js';
import type { FleetgateEnv } from './device-client-env.js';
import type { SoftTpm } from './swtpm.js';

export { type Line, stepLine } from './agent-process.js';

const AGENT = path.join(REPO_ROOT, 'test/fixtures/device-client/tpm-renew-agent.mjs');

export interface TpmRenewAgentOptions {
  env: FleetgateEnv;
  tpm: SoftTpm;
  deviceId: string;
  dir: string;
  caFile: string;
  steps: string[];
  tag: string;
  /** TpmKeyStore.attest (default true). */
  attest?: boolean;
  /** Automatic renewal due at once after connect (step `autoRenewed` waits for it). */
  autoRenew?: boolean;
}

export function tpmRenewAgent(opts: TpmRenewAgentOptions): Promise<Line[]> {
  const t = opts.tpm;
  const cfg = {
    ...agentConfig(opts),
    pkcs11: { module: t.module, token: t.token, pin: t.pin },
    tpm: { attest: opts.attest ?? true, tcti: t.env.TPM2TOOLS_TCTI, store: t.env.TPM2_PKCS11_STORE },
    autoRenew: opts.autoRenew ?? false,
  };
  return runAgentProcess({ script: AGENT, cfg, env: t.env, confPrefix: 'fg-dc-renew-ossl-', timeoutMs: 150_000 });
}
