/**
 * `npm install` prints no EBADENGINE warning on the Node versions the README supports (issue 16
 * item 5). npm warns when an installed package's `engines.node` excludes the running Node, so the
 * check is the same one over the lock: every package installed on this platform must accept the
 * oldest supported release of each Node line we claim (and the one running the test).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import semver from 'semver';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/cli.js';

interface LockEntry {
  version?: string;
  engines?: { node?: string } | string[];
  optional?: boolean;
  os?: string[];
  cpu?: string[];
}

const readJson = <T>(file: string): T => JSON.parse(readFileSync(path.join(REPO_ROOT, file), 'utf8')) as T;
const lock = readJson<{ packages: Record<string, LockEntry> }>('package-lock.json');
const root = readJson<{ engines: { node: string }; workspaces: string[] }>('package.json');

/**
 * npm checks engines only for what it installs. Every non-optional package is installed; an
 * optional one only on a platform it fits (its own os/cpu, or those of the optional package that
 * pulls it in, like the wasm32 runtime of a bundler binding), which npm has decided on this
 * machine: it is installed when it is in node_modules.
 */
function installedHere(where: string, entry: LockEntry): boolean {
  if (entry.optional !== true) return true;
  if (entry.os && !entry.os.includes(process.platform)) return false;
  if (entry.cpu && !entry.cpu.includes(process.arch)) return false;
  return existsSync(path.join(REPO_ROOT, where, 'package.json'));
}

function nodeRange(entry: LockEntry): string | undefined {
  return entry.engines && !Array.isArray(entry.engines) ? entry.engines.node : undefined;
}

describe('engines', () => {
  it('the README states the same minimum Node version as package.json', () => {
    const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const min = semver.minVersion(root.engines.node);
    expect(min?.version).toBe('20.19.0');
    // Node 22 before 22.12 lacks require(esm), which vite and pkijs need: the range says so.
    expect(semver.satisfies('22.11.0', root.engines.node)).toBe(false);
    expect(readme).toContain('Node.js 20.19+ or 22.12+');
  });

  it('every workspace declares the root engines range', () => {
    for (const ws of root.workspaces) {
      const pkg = readJson<{ engines?: { node?: string } }>(`${ws}/package.json`);
      expect(pkg.engines?.node, ws).toBe(root.engines.node);
    }
  });

  // The first release of each line the README admits ("20.19+ or 22.12+"), and the running one.
  const versions = ['20.19.0', '22.12.0', '24.0.0', process.versions.node].filter(
    (v, i, all) => all.indexOf(v) === i && semver.satisfies(v, root.engines.node),
  );
  it.each(versions)('no installed package refuses Node %s (npm would warn EBADENGINE)', (version) => {
    const refusing: string[] = [];
    for (const [where, entry] of Object.entries(lock.packages)) {
      const range = nodeRange(entry);
      if (!where || !range || !installedHere(where, entry)) continue;
      if (!semver.satisfies(version, range)) refusing.push(`${where}@${entry.version}: node ${range}`);
    }
    expect(refusing).toEqual([]);
  });
});
