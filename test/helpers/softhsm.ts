/**
 * A throwaway SoftHSM2 token: its own config and token directory, initialised with
 * `softhsm2-util --init-token`. SOFTHSM2_CONF is set in this process (the module reads it at
 * C_Initialize), so call this before anything loads libsofthsm2.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tempDir } from './cli.js';

export const SOFTHSM_MODULE_CANDIDATES = [
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
];

export function softhsmModule(): string | undefined {
  return SOFTHSM_MODULE_CANDIDATES.find((p) => existsSync(p));
}

export interface SoftHsmToken {
  module: string;
  token: string;
  pin: string;
  soPin: string;
  conf: string;
}

let configured: string | undefined;

export function createSoftHsmToken(label = 'fleetgate-test', pin = '1234'): SoftHsmToken {
  const module = softhsmModule();
  if (!module) throw new Error('libsofthsm2.so not found');
  if (!configured) {
    const dir = tempDir('fg-softhsm-');
    mkdirSync(path.join(dir, 'tokens'), { mode: 0o700 });
    configured = path.join(dir, 'softhsm2.conf');
    writeFileSync(
      configured,
      `directories.tokendir = ${path.join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
    );
    process.env.SOFTHSM2_CONF = configured;
  }
  const soPin = '5678';
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', soPin], {
    env: { ...process.env, SOFTHSM2_CONF: configured },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return { module, token: label, pin, soPin, conf: configured };
}
