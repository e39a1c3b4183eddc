// CLI start-up as an operator sees it (issue 16 item 5): wall time of `fleetgate --help` and of
// `fleetgate devices list` against a running server (embedded PGlite, one broker worker), each the
// median of several runs, one process per run (a fresh Node, as from a shell).
// `node bench/cli.mjs` prints its figures as one JSON line; bench/run.mjs includes them.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { childEnv, FLEETGATE, log, round, startServe, tempDir } from './lib.mjs';

/** Wall ms of one `fleetgate <args>` process; throws on a non-zero exit. */
function wallMs(args, env) {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [FLEETGATE, ...args], { env: childEnv(env), encoding: 'utf8' });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`fleetgate ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

export async function benchCli({ quick = false } = {}) {
  const runs = quick ? 5 : 15;
  const dataDir = tempDir('fleetgate-bench-cli-');
  const env = { FLEETGATE_DATA_DIR: dataDir };
  try {
    const help = [];
    for (let i = 0; i < runs; i++) help.push(wallMs(['--help'], env));
    const server = await startServe({ ...env, FLEETGATE_WORKERS: '1' });
    const list = [];
    try {
      wallMs(['devices', 'list'], env); // the server's first API answer warms its own caches
      for (let i = 0; i < runs; i++) list.push(wallMs(['devices', 'list'], env));
    } finally {
      await server.stop();
    }
    const figures = { cliHelpMs: round(median(help), 0), cliDevicesListMs: round(median(list), 0), cliRuns: runs };
    log(`cli: --help ${figures.cliHelpMs} ms, devices list ${figures.cliDevicesListMs} ms (median of ${runs})`);
    return figures;
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify(await benchCli({ quick: process.argv.includes('--quick') })));
}
