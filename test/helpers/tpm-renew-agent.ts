/**
 * Runs test/fixtures/device-client/tpm-renew-agent.mjs: a device process with the TPM key store
 * on the compiled device-client, OPENSSL_CONF preloading the pkcs11 engine (it must be set
 * before node starts, hence a process). Resolves to its JSON lines when it exits 0; rejects with
 * every line and its stderr otherwise.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pkcs11OpenSslConfig } from '../../device-client/src/index.js';
import { REPO_ROOT, tempDir } from './cli.js';
import type { FleetgateEnv } from './device-client-env.js';
import type { SoftTpm } from './swtpm.js';

const AGENT = path.join(REPO_ROOT, 'test/fixtures/device-client/tpm-renew-agent.mjs');
const DIST = path.join(REPO_ROOT, 'device-client/dist/index.js');

export type Line = Record<string, unknown>;

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
  const conf = path.join(tempDir('fg-dc-renew-ossl-'), 'openssl.cnf');
  writeFileSync(conf, pkcs11OpenSslConfig());
  const t = opts.tpm;
  const cfg = {
    dist: DIST,
    deviceId: opts.deviceId,
    dir: opts.dir,
    caFile: opts.caFile,
    estUrl: opts.env.apiUrl,
    mqttUrl: opts.env.mqttUrl,
    pkcs11: { module: t.module, token: t.token, pin: t.pin },
    tpm: { attest: opts.attest ?? true, tcti: t.env.TPM2TOOLS_TCTI, store: t.env.TPM2_PKCS11_STORE },
    steps: opts.steps,
    tag: opts.tag,
    autoRenew: opts.autoRenew ?? false,
  };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [AGENT, JSON.stringify(cfg)], {
      env: { ...process.env, ...t.env, OPENSSL_CONF: conf },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: Line[] = [];
    let buf = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          lines.push(JSON.parse(text) as Line);
        } catch {
          stderr += `${text}\n`;
        }
      }
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    // A generous ceiling so a hung TPM or server fails the test instead of holding it.
    const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(lines);
      else
        reject(
          new Error(`device process failed (${code}):\n${lines.map((l) => JSON.stringify(l)).join('\n')}\n${stderr}`),
        );
    });
  });
}

/** The `nth` line of step `name`. */
export function stepLine(lines: Line[], name: string, nth = 0): Line {
  const found = lines.filter((l) => l.step === name)[nth];
  if (!found) throw new Error(`no ${name} #${nth} in ${JSON.stringify(lines)}`);
  return found;
}
