// CI: is the committed package-lock.json still what `npm install` resolves? Compares the lock at
// HEAD with the one `npm install` just wrote, package by package (version, resolved, integrity,
// dependencies), and fails on any difference, as `npm ci` would on a stale lock.
//
// One kind of entry is left out of the comparison: optional packages built for another platform
// (os / cpu / libc this machine does not have). npm records them only if the registry serves
// them, and the registry these machines reach has been adding biome's per-platform binaries over
// time (seen on 2026-11-24: the android, darwin, musl and win32 builds appeared within minutes of
// each other), so the same install can list more or fewer of them from one hour to the next.
// None of them is ever installed here.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const LIBC =
  process.platform === 'linux' ? (process.report?.getReport().header.glibcVersionRuntime ? 'glibc' : 'musl') : null;

function foreign(entry) {
  if (entry.optional !== true) return false;
  if (entry.os && !entry.os.includes(process.platform)) return true;
  if (entry.cpu && !entry.cpu.includes(process.arch)) return true;
  if (entry.libc && LIBC && !entry.libc.includes(LIBC)) return true;
  return false;
}

/** What must not change for a package: the fields `npm ci` would compare. */
const FIELDS = [
  'version',
  'resolved',
  'integrity',
  'dependencies',
  'devDependencies',
  'optionalDependencies',
  'peerDependencies',
];

/** path -> its FIELDS (JSON), for every package of the lock but the foreign ones. */
function packages(lockText) {
  const out = new Map();
  for (const [path, entry] of Object.entries(JSON.parse(lockText).packages ?? {})) {
    if (!foreign(entry)) out.set(path, JSON.stringify(FIELDS.map((f) => entry[f])));
  }
  return out;
}

const committed = packages(execFileSync('git', ['show', 'HEAD:package-lock.json'], { encoding: 'utf8' }));
const installed = packages(readFileSync('package-lock.json', 'utf8'));
const differences = [];
for (const [path, entry] of installed) {
  if (!committed.has(path)) differences.push(`added by npm install: ${path || '(root)'}`);
  else if (committed.get(path) !== entry) differences.push(`changed by npm install: ${path || '(root)'}`);
}
for (const path of committed.keys()) if (!installed.has(path)) differences.push(`removed by npm install: ${path}`);

if (differences.length > 0) {
  console.error('package-lock.json is out of date: run npm install and commit it');
  for (const d of differences.slice(0, 20)) console.error(`  ${d}`);
  process.exit(1);
}
console.log(`package-lock.json matches what npm install resolves (${installed.size} packages compared)`);
