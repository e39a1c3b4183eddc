/**
 * The data dir: where the embedded database, the CA material and the operator credential live.
 * The directory is 0700 and secrets inside are 0600. Writes of secrets are atomic and never
 * overwrite an existing file (a second CA must never silently replace the first).
 */
import { randomBytes } from 'node:crypto';
import { promises as fs, constants as fsc } from 'node:fs';
import path from 'node:path';
import { FleetgateError } from './errors.js';

export interface DataDirLayout {
  root: string;
  pgliteDir: string;
  caDir: string;
  rootCert: string;
  rootKey: string;
  issuingCert: string;
  issuingKey: string;
  operatorCredential: string;
  /** Written by a running `serve`: where its API really listens (port 0 picks a free one). */
  runtimeFile: string;
}

export function dataDirLayout(root: string): DataDirLayout {
  const caDir = path.join(root, 'ca');
  return {
    root,
    pgliteDir: path.join(root, 'db'),
    caDir,
    rootCert: path.join(caDir, 'root.crt'),
    rootKey: path.join(caDir, 'root.key'),
    issuingCert: path.join(caDir, 'issuing.crt'),
    issuingKey: path.join(caDir, 'issuing.key'),
    operatorCredential: path.join(root, 'operator.token'),
    runtimeFile: path.join(root, 'serve.json'),
  };
}

function describe(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err?.code ? `${err.code}` : String(err?.message ?? e);
}

/** Creates (0700) or checks the data dir and its ca/ subdirectory; throws DATA_DIR_INVALID. */
export async function prepareDataDir(root: string): Promise<DataDirLayout> {
  const layout = dataDirLayout(root);
  for (const dir of [layout.root, layout.caDir]) {
    try {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      const st = await fs.stat(dir);
      if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
      await fs.access(dir, fsc.R_OK | fsc.W_OK | fsc.X_OK);
    } catch (e) {
      throw new FleetgateError(
        'DATA_DIR_INVALID',
        `data dir ${dir} is not a usable directory (${describe(e)}); check FLEETGATE_DATA_DIR`,
      );
    }
  }
  return layout;
}

/** Reads a file, or returns null when it does not exist. Other failures are DATA_DIR_INVALID. */
export async function readOptional(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new FleetgateError(
      'DATA_DIR_INVALID',
      `cannot read ${file} (${describe(e)}); check its owner and permissions`,
    );
  }
}

/**
 * Writes `content` to `file` with the given mode, atomically and only if `file` does not exist
 * yet: the content goes to a temporary file that is then hard-linked into place (link() fails
 * with EEXIST instead of replacing). Returns false if the file already existed.
 */
export async function writeNew(file: string, content: string, mode = 0o600): Promise<boolean> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const handle = await fs.open(tmp, 'wx', mode);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await fs.link(tmp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new FleetgateError('DATA_DIR_INVALID', `cannot write ${file} (${describe(e)})`);
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

/** True if group or others may read the file: keys must be 0600. */
export async function isTooOpen(file: string): Promise<boolean> {
  const st = await fs.stat(file);
  return (st.mode & 0o077) !== 0;
}

export interface RuntimeInfo {
  pid: number;
  apiUrl: string;
  mqttUrl?: string;
}

/** Records where this process serves, for the CLI and the simulator on the same data dir. */
export async function writeRuntimeInfo(layout: DataDirLayout, info: RuntimeInfo): Promise<void> {
  const tmp = `${layout.runtimeFile}.${process.pid}.tmp`;
  await fs.writeFile(tmp, `${JSON.stringify(info)}\n`, { mode: 0o600 });
  await fs.rename(tmp, layout.runtimeFile);
}

export async function removeRuntimeInfo(layout: DataDirLayout): Promise<void> {
  const current = await readRuntimeInfo(layout);
  if (current?.pid === process.pid) await fs.rm(layout.runtimeFile, { force: true });
}

/** The running server's info, or null if none is recorded or its process is gone. */
export async function readRuntimeInfo(layout: DataDirLayout): Promise<RuntimeInfo | null> {
  let info: RuntimeInfo;
  try {
    info = JSON.parse(await fs.readFile(layout.runtimeFile, 'utf8')) as RuntimeInfo;
  } catch {
    return null;
  }
  if (typeof info?.pid !== 'number' || typeof info.apiUrl !== 'string') return null;
  try {
    process.kill(info.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return null;
  }
  return info;
}
