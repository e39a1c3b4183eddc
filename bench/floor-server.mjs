// The floor under our numbers: what Node's own TLS stack costs before any fleetgate code runs.
// Started by the benchmarks as a child process with the same certificates and the same OpenSSL
// settings as `fleetgate serve` (server/openssl/fleetgate.cnf):
//   mqtt  - an mTLS server that answers the first bytes with CONNACK 0 and closes on the next
//           (the connect cycle of bench/mqtt-load.mjs), no MQTT parsing, no broker;
//   https - an HTTPS server (client certificate requested, optional, as the API does) that
//           answers every request with a fixed 700-byte body.
// A fifth argument N > 1 runs N processes sharing the port as fleetgate's broker workers do
// (node:cluster, the kernel spreading connections: FLEETGATE_WORKER_SCHEDULING=none), so a
// cluster's cost can be set against the same stack's cost with N processes.
// Prints its port on stdout. Not a product: it only bounds what a Node broker or API can reach.
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTlsServer } from 'node:tls';

const [mode, keyFile, certFile, caFile, workersArg] = process.argv.slice(2);
const workers = Number(workersArg ?? 1);

if (workers > 1 && cluster.isPrimary) {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  let listening = 0;
  for (let i = 0; i < workers; i++) {
    cluster.fork().on('listening', (address) => {
      if (++listening === workers) process.stdout.write(`${address.port}\n`);
    });
  }
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
    process.exit(0);
  });
} else {
  serve();
}

function serve() {
  const tls = {
    key: readFileSync(keyFile),
    cert: readFileSync(certFile),
    ca: readFileSync(caFile),
    requestCert: true,
    minVersion: 'TLSv1.2',
    // Same ticket key on every start (tickets resume within this run only).
    ticketKeys: Buffer.alloc(48, 7),
  };
  const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);
  const BODY = Buffer.alloc(700, 0x41);

  const server =
    mode === 'mqtt'
      ? createTlsServer({ ...tls, rejectUnauthorized: true, noDelay: true }, (s) => {
          s.on('error', () => undefined);
          s.once('data', () => {
            s.write(CONNACK);
            s.on('data', () => s.end());
          });
        })
      : createHttpsServer({ ...tls, rejectUnauthorized: false }, (req, res) => {
          req.resume();
          req.on('end', () => {
            res.writeHead(200, { 'content-type': 'application/pkcs7-mime' });
            res.end(BODY);
          });
        });
  // In a cluster worker, port 0 is one port the primary picks for every worker.
  server.listen(0, '127.0.0.1', () => {
    if (cluster.isPrimary) process.stdout.write(`${server.address().port}\n`);
  });
  process.on('SIGTERM', () => process.exit(0));
}
