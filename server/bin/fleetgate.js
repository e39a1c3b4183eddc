#!/usr/bin/env node
// Thin launcher: the CLI is TypeScript compiled to dist/ by `npm install` (prepare) or `npm run build`.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Nothing fleetgate creates (data dir, embedded database, keys, service credentials) may be open
// to group or others: the umask goes first, before any file exists, and the relaunched server and
// its broker workers inherit it (server/src/data-dir.ts, PRIVATE_UMASK).
process.umask(process.umask(0o077) | 0o077);

const dist = (file) => new URL(`../dist/cli/${file}`, import.meta.url);
if (!existsSync(dist('main.js'))) {
  process.stderr.write('fleetgate: not built yet - run `npm run build` in the repository root\n');
  process.exit(1);
}
const argv = process.argv.slice(2);
// `serve` reruns itself under fleetgate's OpenSSL settings (server/src/cli/tls-relaunch.ts).
const { relaunch, wantsRelaunch } = await import(dist('tls-relaunch.js').href);
const input = { argv, env: process.env, execArgv: process.execArgv };
if (wantsRelaunch(input)) {
  process.exitCode = await relaunch(fileURLToPath(import.meta.url), input);
} else {
  const { main } = await import(dist('main.js').href);
  process.exitCode = await main(argv);
}
