// `npm run bench` (`-- --quick` for a short run): runs every benchmark and ends with ONE JSON line
// of named figures (listed in bench/README.md). Progress goes to stderr.
import { benchBroker } from './broker.mjs';
import { benchCli } from './cli.mjs';
import { benchConsole } from './console.mjs';
import { benchEnroll } from './enroll.mjs';
import { benchFlood } from './flood.mjs';
import { benchStorm } from './storm.mjs';

const quick = process.argv.includes('--quick');
const started = Date.now();
const figures = { quick, machine: `${(await import('node:os')).cpus().length} cores`, date: new Date().toISOString() };

Object.assign(figures, await benchEnroll(quick ? { devices: 500 } : { devices: 3000 }));
Object.assign(figures, await benchBroker({ quick }));
Object.assign(figures, await benchStorm({ quick }));
Object.assign(figures, await benchFlood(quick ? { seconds: 10 } : { seconds: 300 }));
Object.assign(figures, await benchCli({ quick }));
Object.assign(figures, await benchConsole({ quick }));
figures.crashes += figures.floodCrashes;

figures.benchSeconds = Math.round((Date.now() - started) / 1000);
console.log(JSON.stringify(figures));
