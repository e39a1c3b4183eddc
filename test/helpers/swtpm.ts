/**
 * A software TPM 2.0 for tests, the way DESIGN.md says it works: swtpm (TCP, not-need-init,
 * startup-clear) behind tpm2-abrmd on a private session D-Bus (without the resource manager swtpm
 * runs out of object contexts), a tpm2-pkcs11 store with one token made by tpm2_ptool. Every
 * process started here is stopped by its own pid in stop().
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
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
  stop(): Promise<void>;
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

export async function startSoftTpm(label = 'fleetgate-tpm', pin = '1234'): Promise<SoftTpm> {
  const module = tpm2Pkcs11Module();
  if (!module) throw new Error('libtpm2_pkcs11.so not found');
  const dir = tempDir('fg-swtpm-');
  const state = path.join(dir, 'state');
  const store = path.join(dir, 'store');
  mkdirSync(state, { mode: 0o700 });
  mkdirSync(store, { mode: 0o700 });
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
    // abrmd needs a moment to claim its bus name and reach swtpm.
    await retry('tpm2_ptool init', () => {
      if (abrmd.exitCode !== null) throw new Error(`tpm2-abrmd exited: ${abrmdLog}`);
      return run(['init']);
    });
    run(['addtoken', '--pid=1', `--label=${label}`, `--userpin=${pin}`, '--sopin=5678']);
    return { module, token: label, pin, env, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
