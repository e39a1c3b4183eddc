/**
 * The data dir: where the embedded database, the CA material and the operator credential live.
 * The directory is 0700 and secrets inside are 0600. Writes of secrets are atomic and never
 * overwrite an existing file (a second CA must never silently replace the first).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, promises as fs, constants as fsc, lstatSync, readdirSync } from 'node:fs';
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

/**
 * The process umask fleetgate runs under: nothing it or PGlite creates is readable or writable by
 * group or others. PGlite (Emscripten's NODEFS) creates its WAL and catalog files 0666 and its
 * directories 0777, minus the umask; the WAL holds the TLS ticket key and the admin token hash.
 * Set first thing by server/bin/fleetgate.js (inherited by the relaunched server and the broker
 * workers) and again here for callers of startServer().
 */
export const PRIVATE_UMASK = 0o077;

export function restrictUmask(): void {
  const old = process.umask(PRIVATE_UMASK);
  process.umask(old | PRIVATE_UMASK);
}

/** A start-up warning: one log line per fix made to the data dir. */
export type DataDirWarn = (message: string, fields: Record<string, unknown>) => void;

const octal = (mode: number) => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;

function ownUid(): number | undefined {
  return typeof process.getuid === 'function' ? process.getuid() : undefined;
}

/**
 * One of the data dir, db/ or ca/: must be ours and 0700. Ours and looser: tightened (with a
 * warning). Not ours: refused, whatever its mode, since its owner can read or replace anything we
 * put in it (and a root-run server would otherwise write keys into a user's directory).
 */
async function secureDir(dir: string, warn: DataDirWarn | undefined): Promise<void> {
  const st = await fs.stat(dir);
  if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
  const uid = ownUid();
  if (uid !== undefined && st.uid !== uid) {
    throw new FleetgateError(
      'DATA_DIR_INVALID',
      `data dir ${dir} (mode ${octal(st.mode)}) is owned by uid ${st.uid}, not by this process (uid ${uid}); ` +
        'chown it to the user fleetgate runs as, or choose another FLEETGATE_DATA_DIR',
    );
  }
  if ((st.mode & 0o077) !== 0) {
    await fs.chmod(dir, 0o700);
    warn?.('data dir was open to group or others: tightened', {
      path: dir,
      oldMode: octal(st.mode),
      newMode: '0700',
    });
  }
}

/**
 * Tightens everything under `dir` (files 0600, directories 0700) that group or others may read
 * or write, e.g. PGlite files written 0666 by an older fleetgate. Symbolic links are neither
 * followed nor changed (lstat; chmod on a link would change its target). An entry owned by
 * someone else is refused, as its owner could rewrite it. Returns how many entries changed.
 */
function tightenTree(dir: string): number {
  const uid = ownUid();
  let changed = 0;
  // Entries may go away while we look (temporary files of a server still running here): skipped.
  const skipGone = <T>(op: () => T, fallback: T): T => {
    try {
      return op();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return fallback;
      throw e;
    }
  };
  // Synchronous on purpose: this runs at start-up before anything listens, and ~1,000 PGlite
  // files walked through the thread pool took 0.25-0.6 s on a loaded machine, 0.05-0.08 s like
  // this (measured at load average 10 on 2 cores).
  for (const name of skipGone(() => readdirSync(dir), [] as string[])) {
    const p = path.join(dir, name);
    const st = skipGone(() => lstatSync(p), null);
    if (st === null || st.isSymbolicLink()) continue;
    if (uid !== undefined && st.uid !== uid) {
      throw new FleetgateError(
        'DATA_DIR_INVALID',
        `${p} (mode ${octal(st.mode)}) is owned by uid ${st.uid}, not by this process (uid ${uid}); ` +
          'chown the data dir to the user fleetgate runs as',
      );
    }
    if (st.isDirectory()) {
      if ((st.mode & 0o077) !== 0) {
        chmodSync(p, 0o700);
        changed++;
      }
      changed += tightenTree(p);
    } else if ((st.mode & 0o077) !== 0) {
      // A file swapped for a link between lstat and chmod would have its target changed: the
      // entries are ours in a directory that is ours and private by now, so nobody else can.
      skipGone(() => chmodSync(p, 0o600), undefined);
      changed++;
    }
  }
  return changed;
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/**
 * Creates (0700) or checks the data dir and its ca/ subdirectory, and makes the data dir (db/,
 * ca/ and everything inside) private to this user (see secureDir, tightenTree); throws
 * DATA_DIR_INVALID.
 */
export async function prepareDataDir(root: string, warn?: DataDirWarn): Promise<DataDirLayout> {
  restrictUmask();
  const layout = dataDirLayout(root);
  for (const dir of [layout.root, layout.caDir, layout.pgliteDir]) {
    try {
      // db/ is PGlite's to create, and exists only when the embedded database is used.
      if (dir === layout.pgliteDir) {
        if (!(await exists(dir))) continue;
      } else {
        await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      }
      await secureDir(dir, warn);
      await fs.access(dir, fsc.R_OK | fsc.W_OK | fsc.X_OK);
    } catch (e) {
      if (e instanceof FleetgateError) throw e;
      throw new FleetgateError(
        'DATA_DIR_INVALID',
        `data dir ${dir} is not a usable directory (${describe(e)}); check FLEETGATE_DATA_DIR`,
      );
    }
  }
  // Then what is inside (db/, ca/, operator.token, sim/, ...), one summary line for all of it.
  let changed: number;
  try {
    changed = tightenTree(layout.root);
  } catch (e) {
    if (e instanceof FleetgateError) throw e;
    throw new FleetgateError('DATA_DIR_INVALID', `cannot check the data dir ${layout.root} (${describe(e)})`);
  }
  if (changed > 0) {
    warn?.('data dir entries were open to group or others: tightened (files 0600, directories 0700)', {
      path: layout.root,
      entries: changed,
    });
  }
  return layout;
}

/**
 * Tightens db/ once PGlite has opened it. PGlite ignores the process umask for some files: its
 * initial database is unpacked with chmod 0666, and the relcache init files (pg_internal.init,
 * rewritten at every start) are made 0644 under Emscripten's own umask, which the embedding
 * process cannot set. Files it creates later (WAL segments, tables) go through open() and get
 * 0600 under the process umask (measured with PGlite 0.5 on Node 20). Expected, so not a warning.
 */
export async function securePgliteDir(layout: DataDirLayout): Promise<void> {
  if (!(await exists(layout.pgliteDir))) return;
  await secureDir(layout.pgliteDir, undefined);
  tightenTree(layout.pgliteDir);
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
