/**
 * Prometheus metrics (prom-client), one registry per server. Parts receive narrow observer
 * interfaces; only this module knows prom-client.
 */
import cluster from 'node:cluster';
import { AggregatorRegistry, Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ProvisioningObserver } from './enrollment/types.js';
import type { ErrorCode } from './errors.js';
import type { HttpObserver } from './http/app.js';
import { type BrokerObserver, NULL_BROKER_OBSERVER } from './mqtt/types.js';
import type { OcspObserver } from './revocation/ocsp-responder.js';

export interface ServerMetrics {
  registry: Registry;
  provisioning: ProvisioningObserver;
  broker: BrokerObserver;
  ocsp: OcspObserver;
  http: HttpObserver;
}

/** Every series of this server carries this prefix, prom-client's process and Node.js ones too. */
const PREFIX = 'fleetgate_';

/** The API's request latency by route pattern (never the raw URL: unbounded label values), method, status. */
function createHttpMetrics(registry: Registry): HttpObserver {
  const requests = new Histogram({
    name: 'fleetgate_http_request_duration_seconds',
    help: 'HTTPS API requests by route pattern (unmatched for no route), method and status code: latency until the response was sent',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  return {
    request(route, method, status, seconds) {
      requests.observe({ route, method, status: String(status) }, seconds);
    },
  };
}

export function createMetrics(opts: {
  certsExpiringSoon: () => Promise<number>;
  /** The CA certificates' notAfter (fleetgate_ca_cert_not_after_seconds{ca="root"|"issuing"}). */
  caNotAfter?: { root: Date; issuing: Date };
  /** The registry to fill (a ClusterRegistry when broker workers run); a new one by default. */
  registry?: Registry;
  /** False when the broker runs in worker processes (their series come from the workers). */
  broker?: boolean;
}): ServerMetrics {
  const registry = opts.registry ?? new Registry();
  // process_* and nodejs_* of this process (with broker workers, theirs come labelled {worker}).
  collectDefaultMetrics({ register: registry, prefix: PREFIX });
  if (opts.caNotAfter) {
    const notAfter = new Gauge({
      name: 'fleetgate_ca_cert_not_after_seconds',
      help: 'notAfter of the CA certificates (root, issuing), Unix time in seconds',
      labelNames: ['ca'] as const,
      registers: [registry],
    });
    notAfter.set({ ca: 'root' }, opts.caNotAfter.root.getTime() / 1000);
    notAfter.set({ ca: 'issuing' }, opts.caNotAfter.issuing.getTime() / 1000);
  }
  const enrollments = new Counter({
    name: 'fleetgate_enrollments_total',
    help: 'EST enrollments and re-enrollments by result (ok or error code)',
    labelNames: ['kind', 'result'] as const,
    registers: [registry],
  });
  const unauthenticated = new Counter({
    name: 'fleetgate_est_unauthenticated_total',
    help: 'EST requests that proved no identity (not audited; logged rate-limited), by kind and reason',
    labelNames: ['kind', 'reason'] as const,
    registers: [registry],
  });
  const estLimited = new Counter({
    name: 'fleetgate_est_rate_limited_total',
    help: 'EST requests answered 429 by a rate limit: per source address (address) or per device id after failed authentication (device)',
    labelNames: ['limit'] as const,
    registers: [registry],
  });
  for (const limit of ['address', 'device']) estLimited.inc({ limit }, 0);
  const revocations = new Counter({
    name: 'fleetgate_revocations_total',
    help: 'Certificates revoked',
    registers: [registry],
  });
  let crlThisUpdate: Date | null = null;
  new Gauge({
    name: 'fleetgate_crl_age_seconds',
    help: 'Seconds since the current CRL was generated (thisUpdate)',
    registers: [registry],
    collect() {
      this.set(crlThisUpdate ? (Date.now() - crlThisUpdate.getTime()) / 1000 : -1);
    },
  });
  new Gauge({
    name: 'fleetgate_certs_expiring_soon',
    help: 'Valid certificates expiring within 7 days',
    registers: [registry],
    async collect() {
      this.set(await opts.certsExpiringSoon());
    },
  });
  const ocspCache = new Counter({
    name: 'fleetgate_ocsp_cache_total',
    help: 'OCSP requests without nonce answered from the response cache (hit) or signed afresh (miss)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const ocspLimited = new Counter({
    name: 'fleetgate_ocsp_limited_total',
    help: 'OCSP requests answered tryLater: over the per-address rate (rate) or responder busy (busy)',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  return {
    registry,
    http: createHttpMetrics(registry),
    ocsp: {
      cache(result: 'hit' | 'miss') {
        ocspCache.inc({ result });
      },
      limited(reason: 'rate' | 'busy') {
        ocspLimited.inc({ reason });
      },
    },
    broker: opts.broker === false ? NULL_BROKER_OBSERVER : createBrokerMetrics(registry),
    provisioning: {
      enrollment(kind: 'enroll' | 'reenroll', result: 'ok' | ErrorCode) {
        enrollments.inc({ kind, result });
      },
      unauthenticated(kind: 'enroll' | 'reenroll', reason: string) {
        unauthenticated.inc({ kind, reason });
      },
      estRateLimited(limit: 'address' | 'device') {
        estLimited.inc({ limit });
      },
      revoked(count: number) {
        revocations.inc(count);
      },
      crlPublished(thisUpdate: Date) {
        crlThisUpdate = thisUpdate;
      },
    },
  };
}

/**
 * The primary's registry when broker workers run: its own series (provisioning) followed by the
 * workers' broker series, aggregated with prom-client's AggregatorRegistry (counters and
 * histograms summed; gauges summed, except where a series says otherwise). A worker that does
 * not answer within 5 s leaves its series out of that scrape, noted in a comment line.
 * Process and Node.js series exist in both: the workers' carry {worker} and join the primary's
 * family (one HELP/TYPE per name: Prometheus refuses a scrape that repeats a family).
 */
export class ClusterRegistry extends Registry {
  private readonly aggregator = new AggregatorRegistry();

  constructor() {
    super();
    const exits = new Counter({
      name: 'fleetgate_broker_worker_exits_total',
      help: 'Broker worker processes that exited (each is restarted unless the server is stopping)',
      registers: [this],
    });
    exits.inc(0);
    cluster.on('exit', () => exits.inc());
  }

  override async metrics(): Promise<string> {
    const own = await super.metrics();
    try {
      return mergeExpositions(own, await this.aggregator.clusterMetrics());
    } catch (e) {
      return `${own}# broker worker metrics unavailable: ${(e as Error).message}\n`;
    }
  }
}

/**
 * Joins two Prometheus text expositions (both prom-client's): a family present in both keeps the
 * first one's HELP/TYPE lines and gets the second one's samples after its own.
 */
export function mergeExpositions(first: string, second: string): string {
  const families = new Map<string, string[]>();
  const loose: string[] = [];
  for (const text of [first, second]) {
    const fresh = new Set<string>();
    let current: string[] = loose;
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const header = /^# (?:HELP|TYPE) (\S+)/.exec(line);
      if (header) {
        const name = header[1] as string;
        let lines = families.get(name);
        if (!lines) {
          lines = [];
          families.set(name, lines);
          fresh.add(name);
        }
        current = lines;
        if (fresh.has(name)) lines.push(line);
      } else if (line.startsWith('#')) {
        loose.push(line);
      } else {
        current.push(line);
      }
    }
  }
  return `${[...families.values(), loose].flat().join('\n')}\n`;
}

/**
 * A broker worker's registry and observer; the primary's ClusterRegistry collects it over IPC.
 * `fleetgate_mqtt_worker_connected{worker,pid}` shows how connections spread over the workers.
 */
export function createWorkerMetrics(slot: number): ServerMetrics & { workerConnected(read: () => number): void } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: PREFIX, labels: { worker: String(slot) } });
  // prom-client omits the start time when aggregating; per worker it stays meaningful (restarts).
  const started = registry.getSingleMetric(`${PREFIX}process_start_time_seconds`) as
    | { aggregator?: string }
    | undefined;
  if (started) started.aggregator = 'first';
  new AggregatorRegistry(); // installs prom-client's worker-side answer to the primary's requests
  AggregatorRegistry.setRegistries([registry]);
  let read: (() => number) | null = null;
  new Gauge({
    name: 'fleetgate_mqtt_worker_connected',
    help: 'Connected MQTT clients per broker worker process',
    labelNames: ['worker', 'pid'] as const,
    registers: [registry],
    collect() {
      this.set({ worker: String(slot), pid: String(process.pid) }, read ? read() : 0);
    },
  });
  return {
    registry,
    ocsp: { cache() {}, limited() {} },
    http: { request() {} },
    broker: createBrokerMetrics(registry),
    provisioning: { enrollment() {}, revoked() {}, crlPublished() {} },
    workerConnected(r) {
      read = r;
    },
  };
}

/**
 * A counter family with one label whose counts live in a plain Map and reach prom-client only at
 * scrape time (collect): the broker counts on every connect and every message, and a labelled
 * prom-client call hashes and validates its labels each time. Same names, labels and values in
 * the exposition; a label value appears once counted (or when listed in `initial`).
 */
function scrapedCounter(
  registry: Registry,
  name: string,
  help: string,
  label: string,
  initial: readonly string[] = [],
): (value: string, by?: number) => void {
  const counts = new Map<string, number>(initial.map((v) => [v, 0]));
  new Counter<string>({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      this.reset();
      for (const [value, n] of counts) this.inc({ [label]: value }, n);
    },
  });
  return (value, by = 1) => {
    counts.set(value, (counts.get(value) ?? 0) + by);
  };
}

/** The MQTT broker's series (fleetgate_mqtt_*). */
function createBrokerMetrics(registry: Registry): BrokerObserver {
  const handshakes = scrapedCounter(
    registry,
    'fleetgate_mqtt_handshakes_total',
    'Completed mTLS handshakes with a valid client certificate (before the CONNECT checks), by kind (full or resumed)',
    'kind',
    ['full', 'resumed'],
  );
  const refused = scrapedCounter(
    registry,
    'fleetgate_mqtt_refused_total',
    'Refused connections and packets by reason (no_cert, wrong_ca, expired, revoked, id_mismatch, acl_*, ...)',
    'reason',
  );
  const connectedNow = new Map<string, number>([
    ['device', 0],
    ['service', 0],
  ]);
  new Gauge({
    name: 'fleetgate_mqtt_connected',
    help: 'Connected MQTT clients (CONNACK accepted) by identity kind (device or service)',
    labelNames: ['kind'] as const,
    registers: [registry],
    collect() {
      for (const [kind, n] of connectedNow) this.set({ kind }, n);
    },
  });
  const disconnects = scrapedCounter(
    registry,
    'fleetgate_mqtt_disconnects_total',
    'Ended MQTT sessions by cause',
    'cause',
  );
  const takeovers = new Counter({
    name: 'fleetgate_mqtt_takeovers_total',
    help: 'Connections closed because the same client id connected again (MQTT-3.1.4-2)',
    registers: [registry],
  });
  const messages = scrapedCounter(
    registry,
    'fleetgate_mqtt_messages_total',
    'PUBLISH packets received from clients (in) and delivered to subscribers (out)',
    'direction',
  );
  const throttled = new Counter({
    name: 'fleetgate_mqtt_publish_throttled_total',
    help: 'Times a client exceeded its publish rate and its reads were paused',
    registers: [registry],
  });
  const revokeLatency = new Histogram({
    name: 'fleetgate_mqtt_revoke_disconnect_seconds',
    help: 'From a revocation event reaching the broker to the live connection being closed',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  let ageReader: (() => number) | null = null;
  new Gauge({
    name: 'fleetgate_mqtt_revocation_data_age_seconds',
    help: 'Seconds since the broker last loaded the full revoked-serial set',
    registers: [registry],
    // Across broker workers the oldest set is the one that matters (fail-closed).
    aggregator: 'max',
    collect() {
      this.set(ageReader ? ageReader() : -1);
    },
  });
  return {
    handshake: (kind) => handshakes(kind),
    refused: (reason) => refused(reason),
    connected: (kind, delta) => {
      connectedNow.set(kind, (connectedNow.get(kind) ?? 0) + delta);
    },
    disconnected: (cause) => disconnects(cause),
    takeover: () => takeovers.inc(),
    messages: (direction, count) => messages(direction, count),
    throttled: () => throttled.inc(),
    revokeDisconnect: (seconds) => revokeLatency.observe(seconds),
    revocationDataAge: (read) => {
      ageReader = read;
    },
  };
}
