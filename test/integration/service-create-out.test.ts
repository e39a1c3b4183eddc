/**
 * `fleetgate service create NAME --out DIR` never writes through a link and never leaves an issued
 * credential behind when it fails (issue 21, finding 8): a dangling symbolic link at NAME.crt,
 * NAME.key or ca.pem is refused before anything is issued, and a write that fails after the
 * certificate was issued (a file size limit) revokes it and removes the files the command made.
 */
import { existsSync, lstatSync, mkdirSync, readdirSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../helpers/cli.js';
import { type Fleet, startFleet } from '../helpers/device.js';
import { requireTool } from '../helpers/system-tools.js';

const hasBash = requireTool('bash');

interface DeviceView {
  certificates?: { serial: string; status: string; revocationReason: string | null }[];
}

const made: string[] = [];
function scratch(prefix: string): string {
  const dir = tempDir(prefix);
  made.push(dir);
  return dir;
}

/** The service's certificates on the server ([] when it was never created). */
async function certificatesOf(fleet: Fleet, name: string): Promise<NonNullable<DeviceView['certificates']>> {
  const r = await fleet.api<DeviceView>('GET', `/api/v1/devices/${name}`);
  if (r.status === 404) return [];
  expect(r.status).toBe(200);
  return r.json.certificates ?? [];
}

describe('service create --out refuses links and leaves no credential behind on failure', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet();
    made.push(fleet.dataDir, fleet.work);
  });
  afterAll(async () => {
    await fleet?.stop();
    for (const dir of made) rmSync(dir, { recursive: true, force: true });
  });

  for (const which of ['crt', 'key', 'ca'] as const) {
    it(`a dangling symbolic link at ${which === 'ca' ? 'ca.pem' : `NAME.${which}`}: one line, exit 1, nothing issued, nothing written`, async () => {
      const name = `svc-link-${which}`;
      const out = scratch('fg-svc-link-');
      const elsewhere = path.join(scratch('fg-svc-target-'), 'target');
      const linked = path.join(out, which === 'ca' ? 'ca.pem' : `${name}.${which}`);
      symlinkSync(elsewhere, linked);

      const r = await runCli(['service', 'create', name, '--out', out], fleet.env);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/\[BAD_REQUEST\]/);
      expect(lines[0]).toContain(linked);
      expect(lines[0]).toContain('symbolic link');
      // Nothing written through the link, no key left, the link itself untouched.
      expect(existsSync(elsewhere)).toBe(false);
      expect(readlinkSync(linked)).toBe(elsewhere);
      expect(readdirSync(out)).toEqual([path.basename(linked)]);
      // Nothing active on the server for that service.
      expect((await certificatesOf(fleet, name)).filter((c) => c.status === 'valid')).toEqual([]);
    });
  }

  it('anything but a regular file (a directory at NAME.crt) is refused the same way', async () => {
    const out = scratch('fg-svc-dir-');
    mkdirSync(path.join(out, 'svc-dir.crt'));
    const r = await runCli(['service', 'create', 'svc-dir', '--out', out], fleet.env);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('[BAD_REQUEST]');
    expect(readdirSync(out)).toEqual(['svc-dir.crt']);
    expect(await certificatesOf(fleet, 'svc-dir')).toEqual([]);
  });

  it('a write that fails after issuance revokes the certificate and removes the files it made', async () => {
    if (!hasBash) return;
    const name = 'svc-efbig';
    const out = scratch('fg-svc-efbig-');
    // 1 KiB: the key (about 240 bytes) fits, the CA chain (two certificates) does not.
    const r = await runCli(['service', 'create', name, '--out', out], fleet.env, { fileSizeLimitKiB: 1 });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toContain('[BAD_REQUEST]');
    expect(lines[0]).toContain('EFBIG');
    expect(readdirSync(out)).toEqual([]);
    const certs = await certificatesOf(fleet, name);
    expect(certs.length, 'the certificate was issued, then revoked').toBe(1);
    expect(certs[0]).toMatchObject({ status: 'revoked', revocationReason: 'cessationOfOperation' });

    // The same name works once the files can be written; the ca.pem kept from an earlier run is reused.
    const ok = await runCli(['service', 'create', name, '--out', out], fleet.env);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await certificatesOf(fleet, name)).filter((c) => c.status === 'valid')).toHaveLength(1);
    expect(lstatSync(path.join(out, `${name}.key`)).mode & 0o777).toBe(0o600);
    expect(lstatSync(path.join(out, `${name}.crt`)).mode & 0o777).toBe(0o644);
    expect(lstatSync(path.join(out, 'ca.pem')).mode & 0o777).toBe(0o644);
    const again = await runCli(['service', 'create', 'svc-efbig-2', '--out', out], fleet.env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toBe('');
  });
});
