import { loadConfig } from '../config.js';
import { createLogger } from '../log.js';
import { startServer } from '../main.js';
import { redactUrl } from '../redact.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { colonHex, EXIT_OK, out } from './output.js';
import { followLauncher, RELAUNCHED_ENV } from './tls-relaunch.js';

export const serveCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, { workers: { type: 'string' } });
    const config = loadConfig(
      values.workers === undefined ? process.env : { ...process.env, FLEETGATE_WORKERS: values.workers },
    );
    const log = createLogger(config.logLevel);
    // Signal handlers go in before anything else: a SIGTERM that arrives while no listener exists
    // gets the OS default (instant death, no cleanup). One arriving during start-up is honoured
    // once start-up is done; a second one exits at once.
    let pending: NodeJS.Signals | null = null;
    let stopping = false;
    let onSignal = (signal: NodeJS.Signals) => {
      pending = signal;
    };
    const handler = (signal: NodeJS.Signals) => {
      if (stopping || pending) {
        out(`${signal} again: exiting now`);
        process.exit(1);
      }
      onSignal(signal);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
    // A closed terminal (and the launcher, which passes SIGHUP on) must not cut the server off
    // mid-write with Node's default action: it stops gracefully too. There is nothing to reload.
    process.on('SIGHUP', handler);
    // Relaunched under fleetgate's OpenSSL settings: a launcher that died takes the server down.
    followLauncher(() => handler('SIGTERM'));
    let server: Awaited<ReturnType<typeof startServer>>;
    try {
      server = await startServer(config, log);
    } catch (e) {
      // A failed start reports and exits: no handler may swallow a later SIGTERM, and nothing it
      // left behind by mistake may keep the process alive (the CLI sets the exit code meanwhile).
      for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(signal, handler);
      setTimeout(() => process.exit(), 5_000).unref();
      throw e;
    }
    // The launcher applied FLEETGATE_TLS_TICKETS=1 unless the operator's OpenSSL config won.
    const tickets =
      process.env[RELAUNCHED_ENV] === '1' || config.tlsTickets === 2 ? config.tlsTickets : 'OpenSSL config';
    log.info({ tlsTicketsPerHandshake: tickets }, 'TLS session tickets');

    out(`fleetgate is running${server.caCreated ? ' (new CA created)' : ''}`);
    out(`  API (HTTPS)   ${server.apiUrl}`);
    out(`  EST           ${server.apiUrl}/.well-known/est/`);
    out(`  MQTT (mTLS)   ${server.mqttUrl}`);
    if (server.pkiUrl) out(`  CRL/OCSP      ${server.pkiUrl}/crl  ${server.pkiUrl}/ocsp  (plain HTTP)`);
    if (server.workers > 1 || server.brokerRouting) {
      const routing = server.brokerRouting ? `, messages via ${server.brokerRouting}` : '';
      out(`  MQTT workers  ${server.workers}${routing}`);
    }
    if (server.metricsUrl) out(`  metrics       ${server.metricsUrl}${config.metricsToken ? ' (bearer token)' : ''}`);
    out(`  data dir      ${config.dataDir}`);
    out(
      `  database      ${config.databaseUrl ? `PostgreSQL ${redactUrl(config.databaseUrl)}` : `embedded PGlite in ${server.layout.pgliteDir}`}`,
    );
    out(`  root CA       SHA256 ${colonHex(server.ca.rootFingerprint)}`);
    out(`  issuing CA    SHA256 ${colonHex(server.ca.issuingFingerprint)}`);
    out('  CA bundle     npx fleetgate ca export > ca.pem');
    out('Press Ctrl+C to stop.');

    return await new Promise<number>((resolve) => {
      onSignal = (signal: NodeJS.Signals) => {
        stopping = true;
        out(`${signal}: shutting down`);
        server.close().then(
          () => {
            out('stopped');
            log.flush();
            resolve(EXIT_OK);
          },
          (e: unknown) => {
            log.error({ err: e }, 'shutdown failed');
            resolve(1);
          },
        );
      };
      if (pending) onSignal(pending);
    });
  },
};
