/**
 * Runs tpm2-tools (and tpm2_ptool) as child processes against one TPM. Why child processes: there
 * is no maintained Node binding of the TSS (the TCG Software Stack); tpm2-tools is the reference
 * command line of tpm2-tss, packaged by every distribution that ships tpm2-pkcs11, and it speaks
 * to any TCTI (tpm2-abrmd, the kernel's /dev/tpmrm0, swtpm). Every call gets the TCTI from the
 * options (TPM2TOOLS_TCTI, TPM2_PKCS11_TCTI) rather than from whatever the process inherited.
 *
 * Failures are TpmError naming the step: TPM_TOOLS_MISSING when the command is not installed,
 * TPM_ERROR with the tool's stderr otherwise. Nothing a tool prints is trusted beyond what the
 * caller parses and checks.
 */
import { spawn } from 'node:child_process';
import { TpmError } from '../errors.js';

export interface TpmToolsOptions {
  /** TCTI of the TPM, e.g. `tabrmd:bus_type=session`, `device:/dev/tpmrm0`, `swtpm:port=2321`. */
  tcti?: string | undefined;
  /** tpm2-pkcs11 store directory (TPM2_PKCS11_STORE) for tpm2_ptool. */
  store?: string | undefined;
  /** Extra environment (e.g. DBUS_SESSION_BUS_ADDRESS for a session tpm2-abrmd). */
  env?: Record<string, string> | undefined;
  /** Deadline of one command (default 60 s: RSA key creation on a slow TPM takes seconds). */
  timeoutMs?: number | undefined;
}

const MAX_OUTPUT = 1024 * 1024;

export class TpmTools {
  private readonly env: NodeJS.ProcessEnv;
  private readonly timeoutMs: number;

  constructor(readonly options: TpmToolsOptions = {}) {
    this.env = { ...process.env, ...options.env };
    if (options.tcti) {
      this.env.TPM2TOOLS_TCTI = options.tcti;
      this.env.TPM2_PKCS11_TCTI = options.tcti;
    }
    if (options.store) this.env.TPM2_PKCS11_STORE = options.store;
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  /**
   * `cmd args` in `cwd`; resolves to stdout. `input` goes to stdin (tpm2_send reads the command
   * bytes there). `secret` strings are replaced by *** in error messages (PINs on tpm2_ptool's
   * command line).
   */
  run(
    step: string,
    cmd: string,
    args: string[],
    opts: { cwd: string; input?: Buffer; secrets?: string[] },
  ): Promise<Buffer> {
    const redact = (text: string) =>
      (opts.secrets ?? []).filter((s) => s.length > 0).reduce((t, s) => t.split(s).join('***'), text);
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { cwd: opts.cwd, env: this.env, stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      let outSize = 0;
      let err = '';
      let settled = false;
      const finish = (e: TpmError | undefined, value?: Buffer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (e) reject(e);
        else resolve(value as Buffer);
      };
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        finish(new TpmError('TPM_ERROR', step, `${cmd} did not finish within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      timer.unref?.();
      child.stdout.on('data', (d: Buffer) => {
        outSize += d.length;
        if (outSize <= MAX_OUTPUT) out.push(d);
      });
      child.stderr.on('data', (d: Buffer) => {
        if (err.length < 8192) err += d.toString('utf8');
      });
      child.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT')
          finish(
            new TpmError(
              'TPM_TOOLS_MISSING',
              step,
              `${cmd} is not installed (TPM attestation needs tpm2-tools 5.x and tpm2_ptool from tpm2-pkcs11)`,
              { cause: e },
            ),
          );
        else finish(new TpmError('TPM_ERROR', step, `cannot run ${cmd}: ${e.message}`, { cause: e }));
      });
      child.on('close', (code, signal) => {
        if (code === 0) finish(undefined, Buffer.concat(out));
        else
          finish(
            new TpmError(
              'TPM_ERROR',
              step,
              `${cmd} ${redact(args.join(' '))} failed (${signal ?? `exit ${code}`}): ${redact(err.trim()) || 'no message'}`,
            ),
          );
      });
      // A tool that exits before reading stdin makes the write fail with EPIPE: its exit code says why.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    });
  }
}
