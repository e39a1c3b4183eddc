import { webcrypto } from 'node:crypto';
import { promises as fs, constants as fsc } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import * as x509 from '../ca/x509.js';
import { FleetgateError } from '../errors.js';
import { isValidDeviceId } from '../identifiers.js';
import { connect } from './api-client.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_OK, out, UsageError } from './output.js';

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;
}

interface ServiceJson {
  name: string;
  serial: string;
  notAfter: string;
  certificatePem: string;
  chainPem: string;
}

export const serviceCreateCommand: CommandImpl = {
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      { out: { type: 'string' }, json: { type: 'boolean' } },
      { positionals: 1 },
    );
    const name = positionals[0];
    if (name === undefined) throw new UsageError('NAME is required');
    if (!isValidDeviceId(name)) {
      throw new UsageError('NAME must be 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit');
    }
    if (!values.out) throw new UsageError('--out DIR is required');
    const dir = path.resolve(values.out);
    const keyFile = path.join(dir, `${name}.key`);
    const certFile = path.join(dir, `${name}.crt`);
    const caFile = path.join(dir, 'ca.pem');
    const unwritable = (e: unknown) =>
      new FleetgateError(
        'BAD_REQUEST',
        `--out ${dir}: cannot write there (${(e as NodeJS.ErrnoException)?.code ?? String(e)})`,
      );
    await makeDir(dir).catch((e) => {
      throw unwritable(e);
    });

    const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${name}`, keys, signingAlgorithm: EC });
    const keyPem = pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));

    // Every output file exists (created here, never through a link) before the server issues
    // anything, and the key is in its file: an --out that cannot be written fails here, not
    // after an active certificate exists whose files could not be stored.
    const outputs = new OutputFiles(unwritable);
    let api: Awaited<ReturnType<typeof connect>> | undefined;
    let issued: ServiceJson | undefined;
    try {
      const key = await outputs.create(keyFile, 0o600);
      const cert = await outputs.create(certFile, 0o644);
      const ca = await outputs.createOrRead(caFile, 0o644);
      await key.writeFile(keyPem).catch((e: unknown) => Promise.reject(unwritable(e)));
      await key.sync().catch((e: unknown) => Promise.reject(unwritable(e)));
      api = await connect();
      issued = await api.call<ServiceJson>('POST', '/api/v1/services', { name, csr: csr.toString('pem') });
      await cert.writeFile(issued.certificatePem).catch((e: unknown) => Promise.reject(unwritable(e)));
      if (typeof ca !== 'string')
        await ca.writeFile(issued.chainPem).catch((e: unknown) => Promise.reject(unwritable(e)));
      else if (ca !== issued.chainPem) {
        process.stderr.write(
          `note: ${caFile} exists with other content; left as is (the CA chain is in the API's answer)\n`,
        );
      }
      await outputs.close();
    } catch (e) {
      // Nothing issued stays behind: the certificate is revoked, the files we made are removed.
      if (api && issued) {
        const serial = issued.serial.replace(/:/g, '').toLowerCase();
        await api
          .call('POST', `/api/v1/certificates/${serial}/revoke`, { reason: 'cessationOfOperation' })
          .catch((re: unknown) => {
            process.stderr.write(
              `fleetgate: could not revoke certificate ${serial} of ${name} (${(re as Error).message}); ` +
                `revoke it: npx fleetgate revoke --serial ${serial}\n`,
            );
          });
      }
      await outputs.discard();
      throw e;
    }

    if (values.json) {
      out(
        JSON.stringify({
          name,
          serial: issued.serial,
          notAfter: issued.notAfter,
          key: keyFile,
          certificate: certFile,
          ca: caFile,
        }),
      );
    } else {
      out(`service ${name}: certificate ${issued.serial}, valid until ${issued.notAfter}`);
      out(`  key          ${keyFile} (0600)`);
      out(`  certificate  ${certFile}`);
      out(`  CA           ${caFile}`);
      out(`MQTT client id: ${name} or ${name}-<suffix>`);
    }
    return EXIT_OK;
  },
};

/**
 * The command's output files. Each is checked with lstat (a symbolic link, even a dangling one,
 * or anything but a regular file is refused: writing through a link would put the credential
 * wherever it points) and created with O_CREAT | O_EXCL | O_NOFOLLOW, so an existing file or a
 * link that appears meanwhile is never written through or overwritten. On failure the files
 * created here are removed.
 */
class OutputFiles {
  private readonly made: { file: string; handle: FileHandle }[] = [];
  private readonly opened: FileHandle[] = [];
  constructor(private readonly unwritable: (e: unknown) => FleetgateError) {}

  private async check(file: string, mayExist: boolean): Promise<'absent' | 'file'> {
    const st = await fs.lstat(file).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw this.unwritable(e);
    });
    if (st === null) return 'absent';
    if (st.isSymbolicLink()) {
      throw new FleetgateError('BAD_REQUEST', `${file} is a symbolic link; remove it or choose another --out`);
    }
    if (!st.isFile()) {
      throw new FleetgateError('BAD_REQUEST', `${file} exists and is not a regular file; choose another --out`);
    }
    if (!mayExist) throw new FleetgateError('CONFLICT', `${file} already exists; remove it or choose another --out`);
    return 'file';
  }

  /** A new file; CONFLICT if it exists, BAD_REQUEST if it is a link or not a regular file. */
  async create(file: string, mode: number): Promise<FileHandle> {
    await this.check(file, false);
    let handle: FileHandle;
    try {
      handle = await fs.open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
    } catch (e) {
      // Appeared since the lstat: say what it is now.
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') await this.check(file, false);
      throw this.unwritable(e);
    }
    this.made.push({ file, handle });
    // The process umask (077, server/bin/fleetgate.js) would make a certificate 0600: certificates
    // and the CA chain are public, and a broker client may run as another user.
    await handle.chmod(mode).catch((e: unknown) => Promise.reject(this.unwritable(e)));
    return handle;
  }

  /** A new file as create() does, or the content of an existing regular file (never a link). */
  async createOrRead(file: string, mode: number): Promise<FileHandle | string> {
    if ((await this.check(file, true)) === 'absent') return this.create(file, mode);
    const handle = await fs.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW).catch((e: unknown) => {
      throw this.unwritable(e);
    });
    this.opened.push(handle);
    return handle.readFile('utf8');
  }

  async close(): Promise<void> {
    for (const { handle } of this.made) {
      await handle.sync().catch((e: unknown) => Promise.reject(this.unwritable(e)));
    }
    await this.closeAll();
  }

  async discard(): Promise<void> {
    await this.closeAll();
    for (const { file } of this.made) await fs.rm(file, { force: true });
    this.made.length = 0;
  }

  private async closeAll(): Promise<void> {
    for (const handle of [...this.made.map((m) => m.handle), ...this.opened]) await handle.close().catch(() => {});
    this.opened.length = 0;
  }
}

/**
 * mkdir -p with mode 0700, without Node's recursive mkdir, which retries for ever where a parent
 * exists and mkdir still answers ENOENT (/proc/self/x: measured, the CLI hung).
 */
async function makeDir(dir: string): Promise<void> {
  try {
    await fs.mkdir(dir, { mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && (await fs.stat(dir)).isDirectory()) return;
    if (code !== 'ENOENT') throw e;
    const parent = path.dirname(dir);
    const parentExists = await fs.stat(parent).then(
      () => true,
      () => false,
    );
    if (parent === dir || parentExists) throw e;
    await makeDir(parent);
    await fs.mkdir(dir, { mode: 0o700 });
  }
}
