/**
 * The composition root: config -> store -> CA -> HTTPS API (+ MQTT broker) with graceful
 * shutdown. The only place that knows every part; parts know only what they are handed.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { type CertificateAuthority, issueServerCertificate } from './ca/index.js';
import { loadOrCreateCa } from './ca-bootstrap.js';
import type { Config } from './config.js';
import { type DataDirLayout, prepareDataDir } from './data-dir.js';
import { createHttpApp } from './http/app.js';
import { registerEstRoutes } from './http/routes/est.js';
import { registerHealthRoutes } from './http/routes/health.js';
import { openStore } from './store/index.js';
import type { Store } from './store/types.js';

export interface RunningServer {
  config: Config;
  layout: DataDirLayout;
  store: Store;
  ca: CertificateAuthority;
  caCreated: boolean;
  apiUrl: string;
  close(): Promise<void>;
}

/** Validity of the API's own TLS certificate; it is re-issued at every start. */
const SERVER_CERT_DAYS = 90;

export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) {
      try {
        await close();
      } catch (e) {
        log.warn({ err: e }, 'error during shutdown');
      }
    }
  };
  try {
    const layout = await prepareDataDir(config.dataDir);
    const store = await openStore({ databaseUrl: config.databaseUrl, pgliteDir: layout.pgliteDir });
    closers.push(() => store.close());
    log.info({ backend: store.backend }, 'store open');

    const { ca, created } = await loadOrCreateCa({
      layout,
      store,
      algorithm: config.caKeyAlgorithm,
      name: config.caName,
      now: new Date(),
      log,
    });
    log.info({ root: ca.rootFingerprint, issuing: ca.issuingFingerprint, created }, 'CA ready');

    const serverCert = await issueServerCertificate(ca, {
      now: new Date(),
      dnsNames: config.serverNames.dnsNames,
      ipAddresses: config.serverNames.ipAddresses,
      validityDays: SERVER_CERT_DAYS,
    });

    const app: FastifyInstance = createHttpApp({
      log,
      tls: { keyPem: serverCert.keyPem, chainPem: serverCert.chainPem, clientCaPem: ca.bundlePem },
    });
    registerHealthRoutes(app, { store });
    registerEstRoutes(app, { ca });
    await app.listen({ host: config.host, port: config.apiPort });
    closers.push(() => app.close());
    const address = app.server.address();
    const apiPort = typeof address === 'object' && address ? address.port : config.apiPort;
    const apiHost = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;

    return {
      config,
      layout,
      store,
      ca,
      caCreated: created,
      apiUrl: `https://${apiHost.includes(':') ? `[${apiHost}]` : apiHost}:${apiPort}`,
      close: closeAll,
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}
