/**
 * A software TPM 2.0 for tests: swtpm (TCP, not-need-init, startup-clear) behind tpm2-abrmd on a
 * private session D-Bus (without the resource manager swtpm runs out of object contexts), a
 * tpm2-pkcs11 store with one token made by tpm2_ptool, and optionally EK certificates from a test
 * manufacturer CA (swtpm_setup --create-ek-cert with swtpm_localca). Every process started here
 * is stopped by its own pid in stop().
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { tempDir } from './cli.js';
import { freePort } from './device-client-env.js';

export const TPM2_PKCS11_MODULE_CANDIDATES = [
  '/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so',
  '/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so',
  '/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1',
  '/usr/lib/pkcs11/libtpm2_pkcs11.so',
];

export function tpm2Pkcs11Module(): string | undefined {
  return TPM2_PKCS11_MODULE_CANDIDATES.find((p) => existsSync(p));
}

export interface SoftTpm {
  module: string;
  token: string;
  pin: string;
  /** Environment for processes that use the token (D-Bus address, TCTI, store). */
  env: Record<string, string>;
  /** The test manufacturer CA's root and the issuer of the EK certificates (PEM), with `ekCert`. */
  ekRootPem?: string;
  ekIssuerPem?: string;
  /** The temp dir of this TPM (state, store, manufacturer CA): a place for tool output files. */
  dir: string;
  /** Runs a tpm2-tools command against this TPM (through tpm2-abrmd); returns stdout. */
  tools(cmd: string, args: string[]): string;
  /**
   * TPM2_Certify of the object at persistent handle `key` by the AK at persistent handle `ak`,
   * with `qualifyingData` (tpm2_certify 5.x has no option for it, so the command is marshalled
   * here and sent with tpm2_send: TPM 2.0 Part 3 18.2, password sessions with empty auth).
   */
  certify(key: number, ak: number, qualifyingData: Uint8Array): { attest: Buffer; signature: Buffer };
  stop(): Promise<void>;
}

/** TPM2_Certify command bytes (Part 3 18.2.2); inScheme TPM_ALG_NULL uses the AK's own scheme. */
function certifyCommand(key: number, ak: number, qualifyingData: Uint8Array): Buffer {
  const pwSession = Buffer.from([0x40, 0x00, 0x00, 0x09, 0, 0, 0, 0, 0]); // TPM_RS_PW, no nonce, no auth
  const handles = Buffer.alloc(8);
  handles.writeUInt32BE(key >>> 0, 0);
  handles.writeUInt32BE(ak >>> 0, 4);
  const authSize = Buffer.alloc(4);
  authSize.writeUInt32BE(pwSession.length * 2);
  const qd = Buffer.alloc(2);
  qd.writeUInt16BE(qualifyingData.length);
  const params = Buffer.concat([qd, qualifyingData, Buffer.from([0x00, 0x10])]);
  const body = Buffer.concat([handles, authSize, pwSession, pwSession, params]);
  const head = Buffer.alloc(10);
  head.writeUInt16BE(0x8002, 0); // TPM_ST_SESSIONS
  head.writeUInt32BE(10 + body.length, 2);
  head.writeUInt32BE(0x00000148, 6); // TPM_CC_Certify
  return Buffer.concat([head, body]);
}

/** Splits a TPM2_Certify response into TPMS_ATTEST and TPMT_SIGNATURE bytes. */
function certifyResponse(rsp: Buffer): { attest: Buffer; signature: Buffer } {
  const rc = rsp.readUInt32BE(6);
  if (rc !== 0) throw new Error(`TPM2_Certify failed with 0x${rc.toString(16)}`);
  const paramSize = rsp.readUInt32BE(10);
  const params = rsp.subarray(14, 14 + paramSize);
  const attestSize = params.readUInt16BE(0);
  return { attest: params.subarray(2, 2 + attestSize), signature: params.subarray(2 + attestSize) };
}

export interface SoftTpmOptions {
  /**
   * Manufacture the TPM with `swtpm_setup --create-ek-cert`: RSA and ECC EKs and their
   * certificates in NV (0x01C00002, 0x01C00016), issued by a local manufacturer CA that
   * swtpm_localca makes in this TPM's temp dir (so two TPMs have different manufacturers).
   */
  ekCert?: boolean;
  /** Initialise a tpm2-pkcs11 store with one token (default true). */
  pkcs11?: boolean;
}

/**
 * swtpm_setup with its own config files: swtpm_localca creates a root CA and a signing CA in
 * `caDir` on first use, and signs the EK certificates with it.
 */
function manufacture(dir: string, state: string): string {
  const caDir = path.join(dir, 'manufacturer-ca');
  mkdirSync(caDir, { mode: 0o700 });
  const localca = path.join(dir, 'swtpm-localca.conf');
  writeFileSync(
    localca,
    [
      `statedir = ${caDir}`,
      `signingkey = ${caDir}/signkey.pem`,
      `issuercert = ${caDir}/issuercert.pem`,
      `certserial = ${caDir}/certserial`,
      '',
    ].join('\n'),
  );
  const options = path.join(dir, 'swtpm-localca.options');
  writeFileSync(options, '--platform-manufacturer fleetgate-test\n--platform-version 1\n--platform-model swtpm\n');
  const setup = path.join(dir, 'swtpm_setup.conf');
  writeFileSync(
    setup,
    [
      'create_certs_tool = swtpm_localca',
      `create_certs_tool_config = ${localca}`,
      `create_certs_tool_options = ${options}`,
      'active_pcr_banks = sha256',
      '',
    ].join('\n'),
  );
  execFileSync(
    'swtpm_setup',
    [
      '--tpm2',
      '--tpmstate',
      state,
      '--create-ek-cert',
      '--config',
      setup,
      '--overwrite',
      '--logfile',
      path.join(dir, 'setup.log'),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return caDir;
}

function waitLine(child: ChildProcess, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no output from ${child.spawnfile} in ${ms} ms`)), ms);
    child.stdout?.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(buf.slice(0, nl).trim());
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${child.spawnfile} exited with ${code}`));
    });
  });
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

async function retry<T>(what: string, fn: () => T, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return fn();
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${what}: ${String((e as { stderr?: unknown }).stderr ?? e)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

export async function startSoftTpm(
  label = 'fleetgate-tpm',
  pin = '1234',
  options: SoftTpmOptions = {},
): Promise<SoftTpm> {
  const wantPkcs11 = options.pkcs11 ?? true;
  const module = tpm2Pkcs11Module();
  if (!module && wantPkcs11) throw new Error('libtpm2_pkcs11.so not found');
  const dir = tempDir('fg-swtpm-');
  const state = path.join(dir, 'state');
  const store = path.join(dir, 'store');
  mkdirSync(state, { mode: 0o700 });
  mkdirSync(store, { mode: 0o700 });
  const caDir = options.ekCert ? manufacture(dir, state) : undefined;
  const ekRootPem = caDir ? readFileSync(path.join(caDir, 'swtpm-localca-rootca-cert.pem'), 'utf8') : undefined;
  const ekIssuerPem = caDir ? readFileSync(path.join(caDir, 'issuercert.pem'), 'utf8') : undefined;
  const children: ChildProcess[] = [];
  const stop = async () => {
    for (const c of children.reverse()) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve());
        c.kill('SIGTERM');
        setTimeout(() => c.kill('SIGKILL'), 3_000).unref();
      });
    }
  };
  try {
    // The swtpm TCTI finds the control channel at port + 1.
    let port = await freePort();
    while (!(await canListen(port + 1))) port = await freePort();
    const ctrl = port + 1;
    const swtpm = spawn(
      'swtpm',
      [
        'socket',
        '--tpm2',
        '--server',
        `type=tcp,port=${port},bindaddr=127.0.0.1`,
        '--ctrl',
        `type=tcp,port=${ctrl},bindaddr=127.0.0.1`,
        '--flags',
        'not-need-init,startup-clear',
        '--tpmstate',
        `dir=${state}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(swtpm);
    const dbus = spawn('dbus-daemon', ['--session', '--nofork', '--print-address=1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(dbus);
    const address = await waitLine(dbus, 10_000);
    const env: Record<string, string> = {
      DBUS_SESSION_BUS_ADDRESS: address,
      TPM2TOOLS_TCTI: 'tabrmd:bus_type=session',
      TPM2_PKCS11_TCTI: 'tabrmd:bus_type=session',
      TPM2_PKCS11_STORE: store,
    };
    for (let i = 0; !(await portOpen(port)); i++) {
      if (i > 100 || swtpm.exitCode !== null) throw new Error('swtpm did not start listening');
      await new Promise((r) => setTimeout(r, 100));
    }
    const abrmd = spawn('tpm2-abrmd', ['--session', `--tcti=swtpm:port=${port}`, '--allow-root'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(abrmd);
    let abrmdLog = '';
    abrmd.stderr?.on('data', (d) => {
      abrmdLog += d;
    });
    const run = (args: string[]) =>
      execFileSync('tpm2_ptool', args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const tools = (cmd: string, args: string[]) =>
      execFileSync(cmd, args, {
        env: { ...process.env, ...env },
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      }).toString();
    // abrmd needs a moment to claim its bus name and reach swtpm.
    await retry(wantPkcs11 ? 'tpm2_ptool init' : 'tpm2_getcap', () => {
      if (abrmd.exitCode !== null) throw new Error(`tpm2-abrmd exited: ${abrmdLog}`);
      return wantPkcs11 ? run(['init']) : tools('tpm2_getcap', ['properties-fixed']);
    });
    if (wantPkcs11) run(['addtoken', '--pid=1', `--label=${label}`, `--userpin=${pin}`, '--sopin=5678']);
    const certify = (key: number, ak: number, qualifyingData: Uint8Array) =>
      certifyResponse(
        execFileSync('tpm2_send', [], {
          env: { ...process.env, ...env },
          input: certifyCommand(key, ak, qualifyingData),
          stdio: ['pipe', 'pipe', 'pipe'],
        }),
      );
    return { module: module ?? '', token: label, pin, env, ekRootPem, ekIssuerPem, dir, tools, certify, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Runs a tpm2-tools command in the TPM's dir; the error carries the tool's stderr. */
export function tpmTool(tpm: SoftTpm, cmd: string, ...args: string[]): string {
  try {
    return tpm.tools(cmd, args);
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')}: ${String((e as { stderr?: unknown }).stderr ?? e)}`);
  }
}

export const readTpmFile = (tpm: SoftTpm, file: string): Buffer => readFileSync(path.join(tpm.dir, file));

/**
 * TPM2_ActivateCredential (tpm2_activatecredential) with the EK's policy (PolicySecret on the
 * endorsement hierarchy, TCG EK profile 2.1.5) on a credential file in tpm2-tools' format;
 * returns the recovered secret, or undefined when the TPM refused to unwrap it.
 */
export function activateCredential(
  tpm: SoftTpm,
  ek: string,
  ak: string,
  credFile: Buffer,
  tag: string,
): Buffer | undefined {
  writeFileSync(path.join(tpm.dir, `${tag}.cred`), credFile);
  tpmTool(tpm, 'tpm2_startauthsession', '--policy-session', '-S', `${tag}.session`);
  try {
    tpmTool(tpm, 'tpm2_policysecret', '-S', `${tag}.session`, '-c', 'e');
    const args = ['-c', ak, '-C', ek, '-i', `${tag}.cred`, '-o', `${tag}.secret`, '-P', `session:${tag}.session`];
    tpmTool(tpm, 'tpm2_activatecredential', ...args);
    return readTpmFile(tpm, `${tag}.secret`);
  } catch (e) {
    if (/activatecredential/.test(String(e))) return undefined;
    throw e;
  } finally {
    tpmTool(tpm, 'tpm2_flushcontext', `${tag}.session`);
  }
}
