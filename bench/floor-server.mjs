// The floor under our numbers: what Node's own TLS stack costs before any fleetgate code runs.
// Started by the benchmarks as a child process with the same certificates and the same OpenSSL
// settings as `fleetgate serve` (server/openssl/fleetgate.cnf):
//   mqtt  - an mTLS server that answers the first bytes with CONNACK 0 and closes on the next
//           (the connect cycle of bench/mqtt-load.mjs), no MQTT parsing, no broker;
//   https - an HTTPS server (client certificate requested, optional, as the API does) that
//           answers every request with a fixed 700-byte body.
// Prints its port on stdout. Not a product: it only bounds what a Node broker or API can reach.
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTlsServer } from 'node:tls';

const [mode, keyFile, certFile, caFile] = process.argv.slice(2);
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
server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
