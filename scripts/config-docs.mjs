#!/usr/bin/env node
// Regenerates the README's settings tables from the configuration schema (server/src/config.ts).
//   node scripts/config-docs.mjs          prints whether README.md is current (exit 1 if stale)
//   node scripts/config-docs.mjs --write  rewrites the tables in README.md
// Reads the compiled server (npm run build first); test/unit/config-docs.test.ts runs the same check.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { updateReadme } from '../server/dist/config-docs.js';

const readmePath = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'README.md');
const current = readFileSync(readmePath, 'utf8');
const next = updateReadme(current);
if (process.argv.includes('--write')) {
  if (next !== current) writeFileSync(readmePath, next);
  console.log(next === current ? 'README.md settings tables already current' : 'README.md settings tables rewritten');
} else if (next !== current) {
  console.error('README.md settings tables are stale: run node scripts/config-docs.mjs --write');
  process.exit(1);
} else {
  console.log('README.md settings tables are current');
}
