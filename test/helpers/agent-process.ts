/**
 * A device process on the compiled device-client (test/fixtures/device-client/*.mjs): its
 * configuration is one JSON argument, OPENSSL_CONF preloads the pkcs11 engine (it must be set
 * before node starts, hence a process), and it prints one JSON line per step. Resolves to those
 * lines when it exits 0; rejects with every line and its stderr otherwise.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pkcs11OpenSslConfig } from '../../device-client/src/index.js';
import { REPO_ROOT, tempDir } from './cli.js';
import type { FleetgateEnv } from './device-client-env.js';

/** The compiled device-client the fixtures import. */
export const DEVICE_CLIENT_DIST = path.join(REPO_ROOT, 'device-client/dist/index.js');

export type Line = Record<string, unknown>;

/** What every fixture's config holds: the library, the device, its directory, the CA file, the URLs, the steps. */
export function agentConfig(opts: {
  env: FleetgateEnv;
  deviceId: string;
  dir: string;
  caFile: string;
  steps: string[];
  tag: string;
}): Record<string, unknown> {
  return {
    dist: DEVICE_CLIENT_DIST,
    deviceId: opts.deviceId,
    dir: opts.dir,
    caFile: opts.caFile,
    estUrl: opts.env.apiUrl,
    mqttUrl: opts.env.mqttUrl,
    steps: opts.steps,
    tag: opts.tag,
  };
}

export interface AgentProcessOptions {
  /** The fixture script. */
  script: string;
  cfg: Record<string, unknown>;
  /** Extra environment of the process (SOFTHSM2_CONF, TPM2TOOLS_TCTI, ...). */
  env: Record<string, string | undefined>;
  /** tempDir prefix of the directory holding its openssl.cnf. */
  confPrefix: string;
  /** A generous ceiling so a hung token or server fails the test instead of holding it. */
  timeoutMs: number;
  onLine?: (line: Line) => void;
}

export function runAgentProcess(opts: AgentProcessOptions): Promise<Line[]> {
  const conf = path.join(tempDir(opts.confPrefix), 'openssl.cnf');
  writeFileSync(conf, pkcs11OpenSslConfig());
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [opts.script, JSON.stringify(opts.cfg)], {
      env: { ...process.env, ...opts.env, OPENSSL_CONF: conf },
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
          const line = JSON.parse(text) as Line;
          lines.push(line);
          opts.onLine?.(line);
        } catch {
          stderr += `${text}\n`;
        }
      }
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
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
