/**
 * `fleetgate-sim` entry: parse arguments, find the server, open the fleet, run one scenario, print
 * the result (human summary, or with --json one JSON object as the last stdout line), exit code.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { KeyStoreConfig } from '@fleetgate/device-client';
import { HELP, parseArgs, type SimOptions, UsageError } from './args.js';
import { SimError } from './errors.js';
import { Fleet } from './fleet.js';
import { Progress } from './progress.js';
import type { RunContext, ScenarioOutcome } from './scenarios/common.js';
import { enrollScenario } from './scenarios/enroll.js';
import { reconnectScenario } from './scenarios/reconnect.js';
import { revokeScenario } from './scenarios/revoke.js';
import { telemetryScenario } from './scenarios/telemetry.js';
import { OperatorApi, resolveTarget } from './target.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const SIM_VERSION = '0.1.0';

const SCENARIO_RUNNERS: Record<SimOptions['scenario'], (ctx: RunContext) => Promise<ScenarioOutcome>> = {
  enroll: enrollScenario,
  telemetry: telemetryScenario,
  reconnect: reconnectScenario,
  revoke: revokeScenario,
};

/** Where distributions install tpm2-pkcs11's module. */
const TPM2_PKCS11_MODULES = [
  '/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so',
  '/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so',
  '/usr/lib/arm-linux-gnueabihf/pkcs11/libtpm2_pkcs11.so',
  '/usr/lib64/pkcs11/libtpm2_pkcs11.so',
  '/usr/lib/pkcs11/libtpm2_pkcs11.so',
];

/** --key tpm: the TpmKeyStore options every device gets (one token, one TPM, a key per device). */
function tpmKeyStore(
  options: SimOptions,
  env: NodeJS.ProcessEnv,
  onStep: (deviceId: string, step: string) => void,
): ((d: { id: string }) => KeyStoreConfig) | undefined {
  if (options.key !== 'tpm') return undefined;
  const module = options.tpmModule ?? TPM2_PKCS11_MODULES.find((p) => existsSync(p));
  if (!module || !existsSync(module))
    throw new SimError(
      'CONFIG_INVALID',
      `--key tpm needs tpm2-pkcs11 (libtpm2_pkcs11.so${module ? ` not found at ${module}` : ' not found'}): install it or pass --tpm-module`,
    );
  const pin = env.FLEETGATE_SIM_TPM_PIN;
  if (!pin) throw new SimError('CONFIG_INVALID', '--key tpm needs the token user PIN in FLEETGATE_SIM_TPM_PIN');
  const tcti = options.tcti ?? env.TPM2TOOLS_TCTI ?? env.TPM2_PKCS11_TCTI;
  const store = options.tpmStore ?? env.TPM2_PKCS11_STORE;
  return (d) => ({
    type: 'tpm',
    module,
    token: options.tpmToken,
    pin,
    attest: options.attest,
    ...(tcti ? { tcti } : {}),
    ...(store ? { store } : {}),
    onStep: (step) => onStep(d.id, step),
  });
}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function err(line: string): void {
  process.stderr.write(`${line}\n`);
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let options: SimOptions;
  try {
    const parsed = parseArgs(argv);
    if ('help' in parsed) {
      out(HELP);
      return EXIT_OK;
    }
    if ('version' in parsed) {
      out(`fleetgate-sim ${SIM_VERSION}`);
      return EXIT_OK;
    }
    options = parsed.options;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`fleetgate-sim: ${e.message}; see 'fleetgate-sim --help'`);
      return EXIT_USAGE;
    }
    throw e;
  }

  const started = Date.now();
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    err('fleetgate-sim: interrupted, stopping (Ctrl+C again to quit at once)');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let fleet: Fleet | undefined;
  try {
    const target = await resolveTarget(env, options.mqttUrl);
    const dir = path.resolve(options.dir ?? target.defaultDir);
    const api = new OperatorApi(target);
    const progress = new Progress(!options.quiet);
    // Devices whose key got as far as TPM2_Certify (then enrolled or refused by the server).
    const certified = new Set<string>();
    const keyStore = tpmKeyStore(options, env, (id, step) => {
      if (step === 'certify') certified.add(id);
      // One line per step for small fleets; a big fleet would drown the progress bar.
      if (options.devices <= 10) progress.note(`${id}: TPM attestation: ${step}`);
    });
    fleet = await Fleet.open(
      target,
      api,
      {
        dir,
        prefix: options.prefix,
        concurrency: options.concurrency,
        connectTimeoutMs: options.connectTimeoutMs,
        keepalive: options.keepalive,
        protocolVersion: options.protocolVersion,
        ...(keyStore ? { keyStore } : {}),
        requireAttestation: options.attest,
      },
      options.devices,
    );
    progress.note(
      `fleetgate-sim: ${options.scenario}, ${options.devices} device(s), API ${target.apiUrl}, MQTT ${target.mqttUrl}, credentials in ${dir}`,
    );
    if (options.key === 'tpm')
      progress.note(
        `fleetgate-sim: keys in the TPM (token ${options.tpmToken}, TCTI ${options.tcti ?? env.TPM2TOOLS_TCTI ?? env.TPM2_PKCS11_TCTI ?? 'tpm2-tools default'})${options.attest ? ', attested at enrollment; tokens require attestation' : ''}`,
      );
    const outcome = await SCENARIO_RUNNERS[options.scenario]({ options, fleet, progress, stop: () => interrupted });
    await fleet.close();
    const failed = options.devices - outcome.ok;
    const failures: Record<string, number> = {};
    for (const d of fleet.devices) if (d.failure) failures[d.failure] = (failures[d.failure] ?? 0) + 1;
    const result = {
      scenario: options.scenario,
      devices: options.devices,
      ok: outcome.ok,
      failed,
      durationMs: Date.now() - started,
      ...outcome.fields,
      ...(options.key === 'tpm'
        ? {
            keyStore: options.key,
            ...(options.attest
              ? { attested: fleet.devices.filter((d) => certified.has(d.id) && !d.failure).length }
              : {}),
          }
        : {}),
      failures,
      errors: Object.fromEntries(fleet.errorCounts),
      concurrency: options.concurrency,
      apiUrl: target.apiUrl,
      mqttUrl: target.mqttUrl,
      dir,
      ...(interrupted ? { interrupted: true } : {}),
    };
    if (options.json) out(JSON.stringify(result));
    else {
      out(
        `fleetgate-sim ${options.scenario}: ${result.ok}/${options.devices} ok, ${failed} failed in ${result.durationMs} ms`,
      );
      for (const line of outcome.lines) out(`  ${line}`);
      const f = Object.entries(failures);
      if (f.length) out(`  failures: ${f.map(([k, v]) => `${v} x ${k}`).join('; ')}`);
      const errs = [...fleet.errorCounts];
      if (errs.length) out(`  errors reported by the device library: ${errs.map(([k, v]) => `${k} ${v}`).join(', ')}`);
    }
    if (interrupted) {
      err('fleetgate-sim: interrupted [INTERRUPTED]');
      return EXIT_FAILURE;
    }
    if (failed > 0) {
      err(
        `fleetgate-sim: ${failed} of ${options.devices} device(s) failed the ${options.scenario} scenario [DEVICES_FAILED]`,
      );
      return EXIT_FAILURE;
    }
    return EXIT_OK;
  } catch (e) {
    const code = e instanceof SimError ? e.code : 'INTERNAL';
    const message = e instanceof SimError ? e.message : `unexpected error: ${(e as Error)?.stack ?? String(e)}`;
    err(`fleetgate-sim: ${message} [${code}]`);
    if (options.json)
      out(
        JSON.stringify({
          scenario: options.scenario,
          devices: options.devices,
          ok: 0,
          failed: options.devices,
          durationMs: Date.now() - started,
          error: { code, message },
        }),
      );
    await fleet?.close().catch(() => undefined);
    return EXIT_FAILURE;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
