/** Entry of a broker worker process forked by the primary (cluster.setupPrimary exec). */
import { runWorker } from './worker.js';

await runWorker();
