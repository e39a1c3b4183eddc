/**
 * The composition root: config -> store -> CA -> use cases -> HTTPS API (+ MQTT broker), with
 * graceful shutdown. The only place that knows every part; parts know only what they are handed.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { AttestationService, parseEkRoots } from './attest/index.js';
import { createAudit } from './audit/index.js';
import { type CertificateAuthority, issueServerCertificate } from './ca/index.js';
import { loadOrCreateCa, loadTokenCa } from './ca-bootstrap.js';
import { startBrokerWorkers } from './cluster/primary.js';
import { advertisedUrl, type Config, certificateNames } from './config.js';
import { FleetSeries } from './console/fleet-series.js';
import { LiveEvents } from './console/live-events.js';
import { ConsoleSessions } from './console/sessions.js';
import {
  type DataDirLayout,
  prepareDataDir,
  removeRuntimeInfo,
  securePgliteDir,
  writeRuntimeInfo,
} from './data-dir.js';
import { createAttestationSteps, createProvisioning, systemClock } from './enrollment/index.js';
import type { ProvisioningObserver } from './enrollment/types.js';
import { freePort } from './free-port.js';
import { createHttpApp } from './http/app.js';
import { createEstLimiter } from './http/est-limits.js';
import { createPkiHttpApp } from './http/pki-app.js';
import { registerAttestRoutes } from './http/routes/attest.js';
import { registerConsoleRoutes } from './http/routes/console.js';
import { registerEstRoutes } from './http/routes/est.js';
import { registerHealthRoutes } from './http/routes/health.js';
import { registerMetricsRoute, startMetricsServer } from './http/routes/metrics.js';
import { registerOperatorApi } from './http/routes/operator-api.js';
import { AddressRateLimiter, registerRevocationRoutes } from './http/routes/revocation.js';
import { registerServiceRoutes } from './http/routes/services.js';
import { createInventory } from './inventory/index.js';
import { listenError } from './listen-error.js';
import { ClusterRegistry, createMetrics } from './metrics.js';
import { startRoutedBroker } from './mqtt/index.js';
import type { BrokerObserver } from './mqtt/types.js';
import { createOperators } from './operators/index.js';
import { createRevocation, crlPathOf } from './revocation/index.js';
import { openStore } from './store/index.js';
import type { Store } from './store/types.js';

export interface RunningServer {
  config: Config;
  layout: DataDirLayout;
  store: Store;
  ca: CertificateAuthority;
  caCreated: boolean;
  /** True when this start created the admin operator credential file. */
  adminCreated: boolean;
  apiUrl: string;
  /** mqtts:// URL of the broker. */
  mqttUrl: string;
  /** Broker processes: 1 = in this process, else node:cluster workers. */
  workers: number;
  /** How messages reach the other broker processes ('' when there are none). */
  brokerRouting: string;
  /** URL of the separate metrics listener (FLEETGATE_METRICS_ADDRESS), or '' when the API serves /metrics. */
  metricsUrl: string;
  /** http:// URL of the plain-HTTP /crl and /ocsp listener, or '' when it is off. */
  pkiUrl: string;
  close(): Promise<void>;
}

/**
 * Base URL of /crl and /ocsp written into new certificates: FLEETGATE_PKI_PUBLIC_URL if set; else,
 * with the plain-HTTP listener on, http:// on the public URL's host (FLEETGATE_PUBLIC_URL, or the
 * bind host) at the PKI port; with it off, the HTTPS public URL (RFC 5280 4.2.1.13 prefers HTTP, but HTTPS still works for clients that can fetch it).
 */
export function pkiBaseUrl(
  config: Pick<Config, 'pkiPublicUrl' | 'publicUrlExplicit' | 'host'>,
  publicUrl: string,
  pkiPort: number | null,
): string {
  if (config.pkiPublicUrl !== undefined) return config.pkiPublicUrl;
  if (pkiPort === null) return publicUrl;
  if (!config.publicUrlExplicit) return advertisedUrl('http', config.host, pkiPort);
  const host = new URL(publicUrl).hostname; // IPv6 stays in brackets
  return `http://${host}:${pkiPort}`;
}

/** Validity of the API's own TLS certificate; it is re-issued at every start. */
const SERVER_CERT_DAYS = 90;
const EXPIRING_SOON_MS = 7 * 86_400_000;

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
    closers.length = 0;
  };
  try {
    const layout = await prepareDataDir(config.dataDir, (message, fields) => log.warn(fields, message));
    // Port 0 means "any free port"; it is resolved now because certificates carry the API URL.
    const apiPort = config.apiPort === 0 ? await freePort(config.host) : config.apiPort;
    const publicUrl = config.publicUrlExplicit ? config.publicUrl : advertisedUrl('https', config.host, apiPort);
    const pkiPort =
      config.pkiHttpPort === null ? null : config.pkiHttpPort === 0 ? await freePort(config.host) : config.pkiHttpPort;
    const pkiBase = pkiBaseUrl(config, publicUrl, pkiPort);
    // A CA key in a token is checked before the database is opened: a wrong PIN, a missing module
    // or key is refused with the data dir left exactly as it was.
    const tokenCa = config.caKey.kind === 'pkcs11' ? await loadTokenCa(layout, config.caKey, log) : undefined;
    if (tokenCa) closers.push(async () => tokenCa.close());
    const store = await openStore({ databaseUrl: config.databaseUrl, pgliteDir: layout.pgliteDir });
    closers.push(() => store.close());
    // PGlite makes some files 0666/0644 whatever the umask (data-dir.ts): private from here on.
    if (!config.databaseUrl) await securePgliteDir(layout);
    log.info({ backend: store.backend }, 'store open');

    const {
      ca,
      created,
      close: closeCaKey,
      listIssuers,
    } = await loadOrCreateCa({
      layout,
      store,
      algorithm: config.caKeyAlgorithm,
      name: config.caName,
      now: new Date(),
      log,
      caKey: config.caKey,
      ...(tokenCa ? { tokenCa } : {}),
    });
    if (!tokenCa) closers.push(async () => closeCaKey());
    log.info({ root: ca.rootFingerprint, issuing: ca.issuingFingerprint, created }, 'CA ready');

    const workers = config.workers;
    const metrics = createMetrics({
      certsExpiringSoon: async () => (await store.listExpiring(new Date(Date.now() + EXPIRING_SOON_MS))).length,
      caNotAfter: { root: ca.rootCert.notAfter, issuing: ca.issuingCert.notAfter },
      // With workers the broker series live in the workers; the primary's registry collects them.
      ...(workers > 1 ? { registry: new ClusterRegistry(), broker: false } : {}),
    });
    // The console's charts and live view (docs/console.md): counted here, where every observer
    // is wired, so the series exist whether or not a browser is open.
    const series = new FleetSeries();
    const live = new LiveEvents();
    const stopFollowing = live.followStore(store);
    closers.push(async () => stopFollowing());
    const provisioningObserver = teeProvisioning(metrics.provisioning, series);
    const brokerObserver = teeBroker(metrics.broker, series);
    const audit = createAudit({ store });
    // Challenges and nonces live in the store: a device's next step may reach another node.
    const attestation = new AttestationService({
      roots: config.tpmEkRootsPem ? parseEkRoots(config.tpmEkRootsPem) : [],
      pending: store,
    });
    if (attestation.enabled) log.info('TPM attestation on (FLEETGATE_TPM_EK_ROOTS)');
    else if (config.mqtt.requireKeyAssurance === 'tpm-attested') {
      // Allowed (devices attested elsewhere, or before the roots were removed, still connect),
      // but no new device can become tpm-attested here: say so once rather than refuse to start.
      log.warn(
        'FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE=tpm-attested while FLEETGATE_TPM_EK_ROOTS is unset: no device can enroll or renew as tpm-attested, so new and renewed devices will be refused by the broker',
      );
    }
    const provisioning = createProvisioning({
      attestation,
      store,
      ca,
      audit,
      // Enrollment outcomes are counted once, at the EST routes (they also see auth failures).
      certValidityDays: config.certValidityDays,
      tokenTtlMs: config.tokenTtlMs,
      serviceSelfRenew: config.serviceSelfRenew,
      serviceMaxLifetimeMs: config.serviceMaxLifetimeMs,
      // Each issuing CA's certificates name its own CRL (revocation/crl-urls.ts).
      crlUrl: `${pkiBase}${crlPathOf(ca)}`,
      ocspUrl: `${pkiBase}/ocsp`,
      allowKeyReuse: config.allowKeyReuse,
      log: log.child({ part: 'enroll' }),
    });
    const revocation = createRevocation({
      store,
      ca,
      audit,
      observer: provisioningObserver,
      ocspObserver: metrics.ocsp,
      log: log.child({ part: 'crl' }),
    });
    closers.push(() => revocation.close());
    const inventory = createInventory({ store });
    const operators = createOperators({ store, audit });
    const admin = await operators.ensureAdmin(layout.operatorCredential);
    const adminCreated = admin.created;
    if (!admin.created && admin.fileMissing) {
      log.warn(
        { file: layout.operatorCredential },
        'operator credentials exist but the admin token file is missing: the CLI needs FLEETGATE_TOKEN',
      );
    }

    const serverCert = await issueServerCertificate(ca, {
      now: new Date(),
      ...certificateNames(config, publicUrl),
      validityDays: SERVER_CERT_DAYS,
    });
    const app: FastifyInstance = await createHttpApp({
      log,
      requestTimeoutMs: config.httpRequestTimeoutMs,
      observer: metrics.http,
      tls: { keyPem: serverCert.keyPem, chainPem: serverCert.chainPem, clientCaPem: ca.bundlePem },
    });
    // Not ready until the broker below accepts (in every worker); the API starts first.
    let brokerAccepting = (): boolean => false;
    registerHealthRoutes(app, { store, brokerAccepting: () => brokerAccepting() });
    // One EST budget per address (and per device id) across enrollment and its attestation steps.
    const estLimiter = createEstLimiter(config.estRateLimits, {
      limited: (l) => metrics.provisioning.estRateLimited?.(l),
    });
    registerEstRoutes(app, { ca, provisioning, observer: provisioningObserver, limiter: estLimiter });
    registerAttestRoutes(app, {
      steps: createAttestationSteps({ store, service: attestation, now: systemClock }),
      limiter: estLimiter,
      unauthenticated: (reason) => metrics.provisioning.unauthenticated?.('enroll', reason),
    });
    // One OCSP budget per address across the HTTPS API and the plain-HTTP listener.
    const ocspRateLimit = new AddressRateLimiter({ ratePerIp: config.ocspRatePerIp, burst: config.ocspRateBurst });
    registerRevocationRoutes(app, { revocation, ocspRateLimit, ocspObserver: metrics.ocsp });
    // With a separate metrics listener, /metrics is served there only (not to the devices' network).
    if (!config.metricsAddress) registerMetricsRoute(app, metrics.registry, { token: config.metricsToken });
    const sessions = new ConsoleSessions(config.consoleSessions);
    await registerOperatorApi(app, {
      ca,
      provisioning,
      revocation,
      inventory,
      operators,
      audit,
      sessions,
      caIssuers: listIssuers,
    });
    await registerServiceRoutes(app, { provisioning, operators, sessions });
    await registerConsoleRoutes(app, { operators, audit, inventory, sessions, series, live });
    closers.push(() => app.close());
    try {
      await app.listen({ host: config.host, port: apiPort });
    } catch (e) {
      throw listenError(e, { host: config.host, port: apiPort, variable: 'FLEETGATE_API_PORT' });
    }
    const apiUrl = advertisedUrl('https', config.host, apiPort);
    let pkiUrl = '';
    if (pkiPort !== null) {
      const pki = await createPkiHttpApp({ log, revocation, ocspRateLimit, ocspObserver: metrics.ocsp });
      closers.push(() => pki.close());
      try {
        await pki.listen({ host: config.host, port: pkiPort });
      } catch (e) {
        throw listenError(e, { host: config.host, port: pkiPort, variable: 'FLEETGATE_PKI_HTTP_PORT' });
      }
      pkiUrl = advertisedUrl('http', config.host, pkiPort);
    }

    // The broker's TLS certificate comes from the same CA and names the same hosts as the API's.
    const brokerTls = { keyPem: serverCert.keyPem, chainPem: serverCert.chainPem, caPem: ca.bundlePem };
    let broker: { url: string; close(): Promise<void> };
    let brokerRouting = '';
    if (workers > 1) {
      const started = await startBrokerWorkers({
        count: workers,
        scheduling: config.workerScheduling,
        host: config.host,
        port: config.mqttPort,
        tls: brokerTls,
        config: config.mqtt,
        logLevel: config.logLevel,
        redisUrl: config.redisUrl,
        redisKeyPrefix: config.redisKeyPrefix,
        store,
        log: log.child({ part: 'cluster' }),
        // Connects and refusals happen in the workers; the console's charts are kept here.
        onFleetCounts: (c) => {
          series.add('connectsFull', c.full);
          series.add('connectsResumed', c.resumed);
          for (const [reason, n] of Object.entries(c.refused)) series.refused(reason, n);
        },
      });
      broker = started;
      brokerRouting = started.routing;
      brokerAccepting = () => started.allAccepting();
    } else {
      const started = await startRoutedBroker(
        {
          host: config.host,
          port: config.mqttPort,
          tls: brokerTls,
          store,
          config: config.mqtt,
          observer: brokerObserver,
          log: log.child({ part: 'mqtt' }),
        },
        { redisUrl: config.redisUrl, redisKeyPrefix: config.redisKeyPrefix },
      );
      broker = started.broker;
      brokerRouting = started.routing;
    }
    if (workers <= 1) brokerAccepting = () => true; // startBroker resolved once its listener accepts
    // Closed before the API and the store (closers run in reverse): live sessions end first.
    closers.push(() => broker.close());
    let metricsUrl = '';
    if (config.metricsAddress) {
      const metricsServer = await startMetricsServer({
        ...config.metricsAddress,
        registry: metrics.registry,
        access: { token: config.metricsToken },
      });
      closers.push(() => metricsServer.close());
      metricsUrl = metricsServer.url;
    }
    const runtime = { pid: process.pid, apiUrl, mqttUrl: broker.url, ...(pkiUrl ? { pkiUrl } : {}) };
    await writeRuntimeInfo(layout, runtime);
    closers.push(() => removeRuntimeInfo(layout));

    return {
      config,
      layout,
      store,
      ca,
      caCreated: created,
      adminCreated,
      apiUrl,
      mqttUrl: broker.url,
      workers,
      brokerRouting,
      metricsUrl,
      pkiUrl,
      close: closeAll,
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/** The metrics observer, also counting enrollments and revocations into the console's series. */
function teeProvisioning(inner: ProvisioningObserver, series: FleetSeries): ProvisioningObserver {
  return {
    ...inner,
    enrollment(kind, result) {
      inner.enrollment(kind, result);
      if (result === 'ok') series.add('enrollments');
    },
    revoked(count) {
      inner.revoked(count);
      series.add('revocations', count);
    },
    crlPublished: (thisUpdate) => inner.crlPublished(thisUpdate),
  };
}

/** The broker's metrics observer, also counting connects and refusals into the console's series. */
function teeBroker(inner: BrokerObserver, series: FleetSeries): BrokerObserver {
  return {
    ...inner,
    handshake(kind) {
      inner.handshake(kind);
      series.add(kind === 'full' ? 'connectsFull' : 'connectsResumed');
    },
    refused(reason) {
      inner.refused(reason);
      series.refused(reason);
    },
  };
}
