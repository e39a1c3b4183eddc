/**
 * The README walkthrough makes private keys (sensor-42.key, creds/ingest.key): it must run in its
 * own folder, and key/credential files must be ignored by git wherever they land (issue 16 item 6).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/cli.js';

function ignored(file: string): boolean {
  try {
    execFileSync('git', ['check-ignore', '--no-index', '-q', file], { cwd: REPO_ROOT, stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('README walkthrough', () => {
  it('moves into its own folder before it writes a key', () => {
    const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const cd = readme.indexOf('mkdir -p walkthrough && cd walkthrough');
    expect(cd).toBeGreaterThan(0);
    for (const writesKey of ['-keyout sensor-42.key', 'service create ingest --out ./creds']) {
      const at = readme.indexOf(writesKey);
      expect(at, writesKey).toBeGreaterThan(cd);
    }
    // The CLI still finds the server started in the repository root.
    expect(readme.slice(cd, readme.indexOf('-keyout sensor-42.key'))).toContain('FLEETGATE_DATA_DIR=../.fleetgate');
  });

  it.each([
    'sensor-42.key',
    'creds/ingest.key',
    'creds/ingest.crt',
    'walkthrough/sensor-42.crt',
    'some/dir/device.key',
    'operator.token',
    'backend.p12',
  ])('git ignores %s', (file) => {
    expect(ignored(file)).toBe(true);
  });

  it('git still sees the CSR fixtures', () => {
    expect(ignored('test/fixtures/csr/good-p256.b64')).toBe(false);
  });
});
