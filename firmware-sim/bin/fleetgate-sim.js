#!/usr/bin/env node
// Thin launcher: the simulator is TypeScript compiled to dist/ by `npm install` (prepare) or `npm run build`.
import { existsSync } from 'node:fs';

// Every simulated device writes its credential and TLS tickets with fsync (crash-safe writes in
// device-client), and fs work runs on libuv's thread pool (4 threads by default): with thousands of
// devices the pool, not the CPU, becomes the limit. Must be set before the pool is first used.
process.env.UV_THREADPOOL_SIZE ??= '16';

const entry = new URL('../dist/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('fleetgate-sim: not built yet - run `npm run build` in the repository root\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
