/**
 * The one typed configuration of fleetgate: environment variables + defaults, validated once at
 * start. A bad value stops start-up with one line naming the variable (ConfigError). Nothing else
 * in the code base reads process.env for settings.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { FleetgateError } from './errors.js';
import { redactUserinfo } from './redact.js';

export type CaKeyAlgorithmSetting = 'P-256' | 'P-384' | 'RSA-3072';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** Absolute path of the data dir: embedded DB, CA material, operator credential. */
  dataDir: string;
  /** PostgreSQL URL; undefined means the embedded PGlite database in the data dir. */
  databaseUrl: string | undefined;
  host: string;
  apiPort: number;
  mqttPort: number;
  /** Base URL devices and relying parties use to reach the API (CRL DP, OCSP in certificates). */
  publicUrl: string;
  /** False when publicUrl was derived from host and port (then it follows the bound port). */
  publicUrlExplicit: boolean;
  /** Extra DNS names / IP addresses for the API's TLS certificate (localhost, 127.0.0.1 always). */
  serverNames: { dnsNames: string[]; ipAddresses: string[] };
  caKeyAlgorithm: CaKeyAlgorithmSetting;
  caName: string;
  /** Device certificate validity (RFC 5280 notAfter - notBefore, before the 5 min backdate). */
  certValidityDays: number;
  /** Default lifetime of an enrollment token. */
  tokenTtlMs: number;
  /** Whether a service certificate may renew itself through EST simplereenroll. */
  serviceSelfRenew: boolean;
  /** How long after an operator issued a service credential its renewals stop (REISSUE_REQUIRED). */
  serviceMaxLifetimeMs: number;
  /** EST rate limits per source address and per device id (http/est-limits.ts); 0 = unlimited. */
  estRateLimits: { ratePerIp: number; burstPerIp: number; authFailuresPerMin: number; authFailureBurst: number };
  /** Whole-request deadline of the HTTPS API (slow or stalled bodies get 408). */
  httpRequestTimeoutMs: number;
  /** Whether re-enrollment may keep the old key (RFC 7030 4.2.2 allows it; a new key is better). */
  allowKeyReuse: boolean;
  /**
   * Port of the plain-HTTP listener serving only /crl and /ocsp (RFC 5280 4.2.1.13, 4.2.2.1 and
   * RFC 6960 appendix A expect http:// for them); 0 = any free port; null = off.
   */
  pkiHttpPort: number | null;
  /** Base URL of /crl and /ocsp written into new certificates, when set explicitly (FLEETGATE_PKI_PUBLIC_URL). */
  pkiPublicUrl: string | undefined;
  /** OCSP requests per second per source address (0 = unlimited); over it: tryLater. */
  ocspRatePerIp: number;
  /** OCSP requests one source address may send at once. */
  ocspRateBurst: number;
  logLevel: LogLevel;
  /** The mTLS MQTT broker (server/src/mqtt). */
  mqtt: MqttConfig;
  /** Broker worker processes (node:cluster) sharing the MQTT port; 1 = the broker runs in this process. */
  workers: number;
  /**
   * How connections reach the workers: 'rr' (the primary accepts and hands them out round-robin,
   * node:cluster's default: even spread) or 'none' (every worker accepts, the kernel picks: no
   * handoff, cheaper per connect, spread left to the OS).
   */
  workerScheduling: 'rr' | 'none';
  /**
   * TLS 1.3 session tickets per handshake (API and broker). 1 is applied by `fleetgate serve`
   * relaunching under server/openssl/fleetgate.cnf (cli/tls-relaunch.ts); 2 is OpenSSL's default.
   */
  tlsTickets: 1 | 2;
  /** redis:// or rediss:// URL: message routing and sessions shared by every broker process (cluster). */
  redisUrl: string | undefined;
  /** Prefix of fleetgate's keys in Redis (aedes sessions, retained messages). */
  redisKeyPrefix: string;
  /** Bearer token /metrics requires (from FLEETGATE_METRICS_TOKEN_FILE); undefined = open, as before. */
  metricsToken: string | undefined;
  /** Plain-HTTP listener serving only /metrics (then not on the public API); undefined = the API serves it. */
  metricsAddress: { host: string; port: number } | undefined;
}

/** Rights of a backend service on the broker: MQTT topic filters it may subscribe / publish to. */
export interface ServiceRights {
  subscribe: string[];
  publish: string[];
}

export interface MqttConfig {
  /** TLS handshake deadline, and the deadline for the MQTT CONNECT after it. */
  handshakeTimeoutMs: number;
  /** Largest MQTT packet accepted (remaining length, bytes); bigger ones close the connection. */
  maxPacketSize: number;
  /**
   * Sustained PUBLISH (+ PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ) packets per second per
   * connection (0 = unlimited); above it reads pause.
   */
  publishRate: number;
  /** Bucket size of the publish rate limit (packets a client may send at once). */
  publishBurst: number;
  /** New TCP connections per second per source IP (0 = unlimited), burst of the same size. */
  connRatePerIp: number;
  /** TCP connections still in the TLS handshake; more are dropped at once. */
  maxHandshakes: number;
  /**
   * QoS 1/2 messages a persistent session may hold unacknowledged (queued while offline, or sent
   * and not yet acknowledged); newer ones are not kept. 0 = unlimited.
   */
  maxQueuedPerSession: number;
  /** Topic filters every device may subscribe to (read only). */
  readonlyTopics: string[];
  /** Rights per service name; '*' is the default for services not listed. */
  serviceAcl: Record<string, ServiceRights>;
  /** How often the TLS ticket key changes (all broker processes switch at the same period edge). */
  ticketRotationMs: number;
  /** TLS session / ticket lifetime. */
  ticketLifetimeMs: number;
  /** Full reload of the revoked-serial set (safety net behind the store's change events). */
  revocationResyncMs: number;
  /** Once the revoked set is older than this (store unreachable), new connections are refused. */
  revocationMaxAgeMs: number;
  /** How often presence (online, last seen) is written to the store, batched. */
  presenceFlushMs: number;
}

export const DEFAULT_SERVICE_RIGHTS: ServiceRights = {
  subscribe: ['devices/+/#'],
  publish: ['devices/+/commands/#'],
};

export class ConfigError extends FleetgateError {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super('CONFIG_INVALID', `${variable} ${message}`, { variable });
  }
}

type Env = Record<string, string | undefined>;

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses "90s", "15m", "24h", "30d" or a bare number of seconds. Returns milliseconds or null. */
export function parseDuration(value: string): number | null {
  const m = /^(\d{1,9})(ms|s|m|h|d)?$/.exec(value.trim());
  if (!m) return null;
  const n = Number(m[1]);
  const ms = n * (DURATION_UNITS[m[2] ?? 's'] ?? 1_000);
  return ms > 0 ? ms : null;
}

function readString(env: Env, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined) return undefined;
  const v = raw.trim();
  return v === '' ? undefined : v;
}

function readPort(env: Env, name: string, dflt: number): number {
  const v = readString(env, name);
  if (v === undefined) return dflt;
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) {
    throw new ConfigError(name, `must be a port number 0-65535 (got ${JSON.stringify(v)})`);
  }
  return Number(v);
}

/** A port, 0 (any free port) or `off` (null: no listener). */
function readPkiHttpPort(env: Env, name: string): number | null {
  const v = readString(env, name);
  if (v?.toLowerCase() === 'off') return null;
  if (v !== undefined && (!/^\d{1,5}$/.test(v) || Number(v) > 65535)) {
    throw new ConfigError(name, `must be a port number 0-65535 or off (got ${JSON.stringify(v)})`);
  }
  return v === undefined ? 8080 : Number(v);
}

function readInt(env: Env, name: string, dflt: number, min: number, max: number): number {
  const v = readString(env, name);
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw new ConfigError(name, `must be a whole number from ${min} to ${max} (got ${JSON.stringify(v)})`);
  }
  return Number(v);
}

function readEnum<T extends string>(env: Env, name: string, allowed: readonly T[], dflt: T): T {
  const v = readString(env, name);
  if (v === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(v)) {
    throw new ConfigError(name, `must be one of ${allowed.join(', ')} (got ${JSON.stringify(v)})`);
  }
  return v as T;
}

function readBool(env: Env, name: string, dflt: boolean): boolean {
  const v = readString(env, name);
  if (v === undefined) return dflt;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new ConfigError(name, `must be true or false (got ${JSON.stringify(v)})`);
}

function readDuration(env: Env, name: string, dflt: number, maxMs: number): number {
  const v = readString(env, name);
  if (v === undefined) return dflt;
  const ms = parseDuration(v);
  if (ms === null || ms > maxMs) {
    throw new ConfigError(name, `must be a duration like 90s, 15m, 24h or 30d (got ${JSON.stringify(v)})`);
  }
  return ms;
}

const HOSTNAME =
  /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function readHost(env: Env, name: string, dflt: string): string {
  const v = readString(env, name);
  if (v === undefined) return dflt;
  // A top-level label is never all digits (RFC 3696 section 2; WHATWG URL parsing takes such a
  // name for an IPv4 address): 999.1.1.1 or 1.2.3 would pass the pattern and break every URL.
  const lastLabel = v.split('.').pop() ?? '';
  if (isIP(v) === 0 && (!HOSTNAME.test(v) || /^[0-9]+$/.test(lastLabel))) {
    throw new ConfigError(name, `must be an IP address or host name (got ${JSON.stringify(v)})`);
  }
  return v;
}

function readServerNames(env: Env, name: string): Config['serverNames'] {
  const v = readString(env, name);
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  if (v === undefined) return { dnsNames, ipAddresses };
  for (const part of v.split(',')) {
    const item = part.trim();
    if (item === '') continue;
    if (isIP(item) !== 0) ipAddresses.push(item);
    else if (HOSTNAME.test(item)) dnsNames.push(item.toLowerCase());
    else
      throw new ConfigError(
        name,
        `must be a comma-separated list of host names and IP addresses (bad entry ${JSON.stringify(item)})`,
      );
  }
  return { dnsNames, ipAddresses };
}

function readDatabaseUrl(env: Env, name: string): string | undefined {
  const v = readString(env, name);
  if (v === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw new ConfigError(name, 'must be a postgres:// or postgresql:// URL (not a valid URL)');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    // Never echo the URL: it may carry a password.
    throw new ConfigError(
      name,
      `must be a postgres:// or postgresql:// URL (got scheme ${JSON.stringify(url.protocol)})`,
    );
  }
  return v;
}

function readRedisUrl(env: Env, name: string): string | undefined {
  const v = readString(env, name);
  if (v === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw new ConfigError(name, 'must be a redis:// or rediss:// URL (not a valid URL)');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    // Never echo the URL: it may carry a password.
    throw new ConfigError(name, `must be a redis:// or rediss:// URL (got scheme ${JSON.stringify(url.protocol)})`);
  }
  if (url.pathname !== '' && url.pathname !== '/' && !/^\/\d{1,5}$/.test(url.pathname)) {
    throw new ConfigError(name, 'must be a redis:// or rediss:// URL whose path, if any, is a database number');
  }
  return v;
}

function readPublicUrl(env: Env, name: string, dflt: string): string {
  const v = readString(env, name);
  if (v === undefined) return dflt;
  let url: URL;
  // Errors show the value with its user information masked: it may carry a password.
  try {
    url = new URL(v);
  } catch {
    throw new ConfigError(name, `must be an http(s) URL (got ${JSON.stringify(redactUserinfo(v))})`);
  }
  if (
    (url.protocol !== 'https:' && url.protocol !== 'http:') ||
    url.search ||
    url.hash ||
    url.username ||
    url.password
  ) {
    throw new ConfigError(
      name,
      `must be an http(s) URL without query, fragment or credentials (got ${JSON.stringify(redactUserinfo(v))})`,
    );
  }
  return url.toString().replace(/\/+$/, '');
}

/**
 * An MQTT topic filter (MQTT 3.1.1 section 4.7): non-empty levels or wildcards, '#' only last,
 * '+' and '#' alone in their level, no NUL, no leading '$' (reserved for the broker).
 */
export function isTopicFilter(filter: string): boolean {
  if (filter.length === 0 || filter.length > 512 || filter.includes('\0') || filter.startsWith('$')) return false;
  const levels = filter.split('/');
  return levels.every((level, i) => {
    if (level.includes('#')) return level === '#' && i === levels.length - 1;
    if (level.includes('+')) return level === '+';
    return true;
  });
}

function readTopicFilters(env: Env, name: string, dflt: string[]): string[] {
  const v = readString(env, name);
  if (v === undefined) return dflt;
  const filters = v
    .split(',')
    .map((f) => f.trim())
    .filter((f) => f !== '');
  const bad = filters.find((f) => !isTopicFilter(f));
  if (bad !== undefined) {
    throw new ConfigError(
      name,
      `must be a comma-separated list of MQTT topic filters (bad entry ${JSON.stringify(bad)})`,
    );
  }
  return filters;
}

function readServiceAcl(env: Env, name: string): Record<string, ServiceRights> {
  const v = readString(env, name);
  const acl: Record<string, ServiceRights> = { '*': DEFAULT_SERVICE_RIGHTS };
  if (v === undefined) return acl;
  const usage = 'must be JSON like {"NAME or *": {"subscribe": ["devices/+/#"], "publish": ["devices/+/commands/#"]}}';
  let parsed: unknown;
  try {
    parsed = JSON.parse(v);
  } catch {
    throw new ConfigError(name, `${usage} (not valid JSON)`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(name, usage);
  for (const [service, rights] of Object.entries(parsed as Record<string, unknown>)) {
    if (service !== '*' && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(service)) {
      throw new ConfigError(name, `${usage} (bad service name ${JSON.stringify(service)})`);
    }
    const r = rights as Record<string, unknown> | null;
    const list = (key: string): string[] => {
      const l = r?.[key] ?? [];
      if (!Array.isArray(l) || !l.every((f) => typeof f === 'string' && isTopicFilter(f))) {
        throw new ConfigError(name, `${usage} (bad ${key} list for ${JSON.stringify(service)})`);
      }
      return l as string[];
    };
    if (typeof r !== 'object' || r === null || Object.keys(r).some((k) => k !== 'subscribe' && k !== 'publish')) {
      throw new ConfigError(name, `${usage} (bad entry for ${JSON.stringify(service)})`);
    }
    acl[service] = { subscribe: list('subscribe'), publish: list('publish') };
  }
  return acl;
}

function readMqttConfig(env: Env): MqttConfig {
  const publishRate = readInt(env, 'FLEETGATE_MQTT_PUBLISH_RATE', 500, 0, 1_000_000);
  const revocationResyncMs = readDuration(env, 'FLEETGATE_MQTT_REVOCATION_RESYNC', 60_000, 86_400_000);
  const revocationMaxAgeMs = readDuration(env, 'FLEETGATE_MQTT_REVOCATION_MAX_AGE', 300_000, 7 * 86_400_000);
  if (revocationMaxAgeMs <= revocationResyncMs) {
    throw new ConfigError(
      'FLEETGATE_MQTT_REVOCATION_MAX_AGE',
      'must be longer than FLEETGATE_MQTT_REVOCATION_RESYNC (else every resync gap refuses connections)',
    );
  }
  return {
    handshakeTimeoutMs: readDuration(env, 'FLEETGATE_MQTT_HANDSHAKE_TIMEOUT', 5_000, 120_000),
    maxPacketSize: readInt(env, 'FLEETGATE_MQTT_MAX_PACKET_SIZE', 131_072, 64, 268_435_455),
    publishRate,
    publishBurst: readInt(env, 'FLEETGATE_MQTT_PUBLISH_BURST', Math.max(1, publishRate * 2), 1, 10_000_000),
    connRatePerIp: readInt(env, 'FLEETGATE_MQTT_CONN_RATE_PER_IP', 500, 0, 1_000_000),
    maxHandshakes: readInt(env, 'FLEETGATE_MQTT_MAX_HANDSHAKES', 1_000, 1, 1_000_000),
    maxQueuedPerSession: readInt(env, 'FLEETGATE_MQTT_MAX_QUEUED', 1_000, 0, 10_000_000),
    readonlyTopics: readTopicFilters(env, 'FLEETGATE_MQTT_READONLY_TOPICS', ['fleet/broadcast/#']),
    serviceAcl: readServiceAcl(env, 'FLEETGATE_MQTT_SERVICE_ACL'),
    ticketRotationMs: readDuration(env, 'FLEETGATE_MQTT_TICKET_ROTATION', 86_400_000, 365 * 86_400_000),
    ticketLifetimeMs: readDuration(env, 'FLEETGATE_MQTT_TICKET_LIFETIME', 86_400_000, 7 * 86_400_000),
    revocationResyncMs,
    revocationMaxAgeMs,
    presenceFlushMs: readDuration(env, 'FLEETGATE_MQTT_PRESENCE_FLUSH', 10_000, 3_600_000),
  };
}

/**
 * The URL clients use for a server bound to host:port. Certificates and banners name a URL that
 * must work from the devices; a wildcard bind address is not one, so it becomes localhost.
 */
export function advertisedUrl(scheme: string, host: string, port: number): string {
  const h = host === '0.0.0.0' || host === '::' ? 'localhost' : host;
  return `${scheme}://${isIP(h) === 6 ? `[${h}]` : h}:${port}`;
}

/**
 * The names the API/broker server certificate must carry so that every URL fleetgate advertises
 * verifies (RFC 6125: clients match the SAN): FLEETGATE_SERVER_NAMES, the bind host (a wildcard
 * is reached through loopback: '::' as ::1, 0.0.0.0 as 127.0.0.1) and the public URL's host.
 * The CA profile adds localhost and 127.0.0.1 itself.
 */
export function certificateNames(
  config: Pick<Config, 'host' | 'serverNames'>,
  publicUrl: string,
): Config['serverNames'] {
  const dnsNames = [...config.serverNames.dnsNames];
  const ipAddresses = [...config.serverNames.ipAddresses];
  const add = (name: string) => {
    const n = name.replace(/^\[(.*)\]$/, '$1').toLowerCase();
    if (n === '' || n === '0.0.0.0') return;
    const list = isIP(n) !== 0 ? ipAddresses : dnsNames;
    if (!list.includes(n)) list.push(n);
  };
  add(config.host === '::' ? '::1' : config.host);
  add(new URL(publicUrl).hostname);
  return { dnsNames, ipAddresses };
}

/** Reads and validates the whole configuration. Throws ConfigError on the first bad variable. */
export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): Config {
  const dataDirRaw = readString(env, 'FLEETGATE_DATA_DIR') ?? '.fleetgate';
  if (dataDirRaw.includes('\0')) throw new ConfigError('FLEETGATE_DATA_DIR', 'must be a path');
  const host = readHost(env, 'FLEETGATE_HOST', '127.0.0.1');
  const apiPort = readPort(env, 'FLEETGATE_API_PORT', 8443);
  const mqttPort = readPort(env, 'FLEETGATE_MQTT_PORT', 8883);
  const caName = readString(env, 'FLEETGATE_CA_NAME') ?? 'fleetgate';
  if (!/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/.test(caName)) {
    throw new ConfigError('FLEETGATE_CA_NAME', 'must be 1-64 letters, digits, spaces, dots, dashes or underscores');
  }
  return {
    dataDir: path.resolve(cwd, dataDirRaw),
    databaseUrl: readDatabaseUrl(env, 'DATABASE_URL'),
    host,
    apiPort,
    mqttPort,
    publicUrl: readPublicUrl(env, 'FLEETGATE_PUBLIC_URL', advertisedUrl('https', host, apiPort)),
    publicUrlExplicit: readString(env, 'FLEETGATE_PUBLIC_URL') !== undefined,
    serverNames: readServerNames(env, 'FLEETGATE_SERVER_NAMES'),
    caKeyAlgorithm: readEnum(env, 'FLEETGATE_CA_KEY_ALGORITHM', ['P-256', 'P-384', 'RSA-3072'] as const, 'P-256'),
    caName,
    certValidityDays: readInt(env, 'FLEETGATE_CERT_VALIDITY_DAYS', 30, 1, 825),
    tokenTtlMs: readDuration(env, 'FLEETGATE_TOKEN_TTL', 24 * 3_600_000, 365 * 86_400_000),
    serviceSelfRenew: readBool(env, 'FLEETGATE_SERVICE_SELF_RENEW', true),
    serviceMaxLifetimeMs: readDuration(env, 'FLEETGATE_SERVICE_MAX_LIFETIME', 365 * 86_400_000, 3650 * 86_400_000),
    estRateLimits: {
      ratePerIp: readInt(env, 'FLEETGATE_EST_RATE_PER_IP', 1_000, 0, 1_000_000),
      burstPerIp: readInt(env, 'FLEETGATE_EST_BURST_PER_IP', 2_000, 1, 10_000_000),
      authFailuresPerMin: readInt(env, 'FLEETGATE_EST_AUTH_FAILURES_PER_MIN', 10, 0, 1_000_000),
      authFailureBurst: readInt(env, 'FLEETGATE_EST_AUTH_FAILURE_BURST', 10, 1, 1_000_000),
    },
    httpRequestTimeoutMs: readDuration(env, 'FLEETGATE_HTTP_REQUEST_TIMEOUT', 30_000, 600_000),
    allowKeyReuse: readBool(env, 'FLEETGATE_ALLOW_KEY_REUSE', false),
    pkiHttpPort: readPkiHttpPort(env, 'FLEETGATE_PKI_HTTP_PORT'),
    pkiPublicUrl:
      readString(env, 'FLEETGATE_PKI_PUBLIC_URL') === undefined
        ? undefined
        : readPublicUrl(env, 'FLEETGATE_PKI_PUBLIC_URL', ''),
    ocspRatePerIp: readInt(env, 'FLEETGATE_OCSP_RATE_PER_IP', 50, 0, 1_000_000),
    ocspRateBurst: readInt(env, 'FLEETGATE_OCSP_RATE_BURST', 100, 1, 10_000_000),
    logLevel: readEnum(
      env,
      'FLEETGATE_LOG_LEVEL',
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const,
      'info',
    ),
    mqtt: readMqttConfig(env),
    workers: readInt(env, 'FLEETGATE_WORKERS', availableParallelism(), 1, 256),
    workerScheduling: readEnum(env, 'FLEETGATE_WORKER_SCHEDULING', ['rr', 'none'] as const, 'none'),
    tlsTickets: readEnum(env, 'FLEETGATE_TLS_TICKETS', ['1', '2'] as const, '1') === '1' ? 1 : 2,
    redisUrl: readRedisUrl(env, 'REDIS_URL'),
    redisKeyPrefix: readRedisKeyPrefix(env, 'FLEETGATE_REDIS_KEY_PREFIX'),
    metricsToken: readTokenFile(env, 'FLEETGATE_METRICS_TOKEN_FILE', cwd),
    metricsAddress: readListenAddress(env, 'FLEETGATE_METRICS_ADDRESS'),
  };
}

function readRedisKeyPrefix(env: Env, name: string): string {
  const v = readString(env, name);
  if (v === undefined) return 'fleetgate:';
  if (!/^[A-Za-z0-9._:-]{1,64}$/.test(v)) {
    throw new ConfigError(
      name,
      `must be 1-64 letters, digits, dots, colons, dashes or underscores (got ${JSON.stringify(v)})`,
    );
  }
  return v;
}

/**
 * A file holding a bearer token (RFC 6750 2.1: b64token), e.g. the one Prometheus sends from its
 * `authorization.credentials_file`. Surrounding whitespace (a trailing newline) is ignored, as
 * Prometheus does. Errors name the file, never its content.
 */
function readTokenFile(env: Env, name: string, cwd: string): string | undefined {
  const v = readString(env, name);
  if (v === undefined) return undefined;
  const file = path.resolve(cwd, v);
  let content: string;
  try {
    content = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(name, `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const token = content.trim();
  if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(token) || token.length < 16 || token.length > 1024) {
    throw new ConfigError(
      name,
      `${file} must hold one token of 16-1024 characters from A-Z a-z 0-9 - . _ ~ + / (RFC 6750 b64token)`,
    );
  }
  return token;
}

/** host:port, with an IPv6 address in brackets ([::1]:9464); port 0 = any free port. */
function readListenAddress(env: Env, name: string): { host: string; port: number } | undefined {
  const v = readString(env, name);
  if (v === undefined) return undefined;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  const host = m?.[1] ?? m?.[2] ?? '';
  const lastLabel = host.split('.').pop() ?? '';
  const hostOk =
    m?.[1] !== undefined ? isIP(host) === 6 : isIP(host) === 4 || (HOSTNAME.test(host) && !/^[0-9]+$/.test(lastLabel));
  if (!m || !hostOk || Number(m[3]) > 65535) {
    throw new ConfigError(name, `must be host:port, e.g. 127.0.0.1:9464 or [::1]:9464 (got ${JSON.stringify(v)})`);
  }
  return { host, port: Number(m[3]) };
}

/** The variables `loadConfig` reads, for `--help` texts and docs. */
export const CONFIG_VARIABLES: readonly { name: string; default: string; meaning: string }[] = [
  { name: 'FLEETGATE_DATA_DIR', default: './.fleetgate', meaning: 'embedded DB, CA keys (0600), operator credential' },
  { name: 'DATABASE_URL', default: '(unset: embedded PGlite)', meaning: 'PostgreSQL URL' },
  { name: 'FLEETGATE_HOST', default: '127.0.0.1', meaning: 'bind address (0.0.0.0 to serve the network)' },
  { name: 'FLEETGATE_API_PORT', default: '8443', meaning: 'HTTPS API, EST, CRL, OCSP' },
  { name: 'FLEETGATE_MQTT_PORT', default: '8883', meaning: 'MQTT over mTLS' },
  {
    name: 'FLEETGATE_PUBLIC_URL',
    default: 'https://<host>:<api port>',
    meaning: 'base URL put in certificates (CRL, OCSP)',
  },
  { name: 'FLEETGATE_SERVER_NAMES', default: '(none)', meaning: 'extra DNS names/IPs for the server certificate' },
  { name: 'FLEETGATE_CA_KEY_ALGORITHM', default: 'P-256', meaning: 'P-256, P-384 or RSA-3072 (first start only)' },
  { name: 'FLEETGATE_CA_NAME', default: 'fleetgate', meaning: 'name in the CA subjects (first start only)' },
  { name: 'FLEETGATE_CERT_VALIDITY_DAYS', default: '30', meaning: 'device certificate lifetime' },
  { name: 'FLEETGATE_TOKEN_TTL', default: '24h', meaning: 'default enrollment token lifetime' },
  { name: 'FLEETGATE_SERVICE_SELF_RENEW', default: 'true', meaning: 'let service certificates renew over EST' },
  {
    name: 'FLEETGATE_SERVICE_MAX_LIFETIME',
    default: '365d',
    meaning: 'service renewals refused this long after `service create` (up to 3650d)',
  },
  { name: 'FLEETGATE_EST_RATE_PER_IP', default: '1000', meaning: 'EST requests/s per source address (0 = unlimited)' },
  { name: 'FLEETGATE_EST_BURST_PER_IP', default: '2000', meaning: 'EST requests one address may send at once' },
  {
    name: 'FLEETGATE_EST_AUTH_FAILURES_PER_MIN',
    default: '10',
    meaning: 'failed EST Basic authentications per minute per device id (0 = unlimited)',
  },
  {
    name: 'FLEETGATE_EST_AUTH_FAILURE_BURST',
    default: '10',
    meaning: 'failed authentications one id may have at once',
  },
  { name: 'FLEETGATE_HTTP_REQUEST_TIMEOUT', default: '30s', meaning: 'deadline for a whole HTTP request' },
  { name: 'FLEETGATE_ALLOW_KEY_REUSE', default: 'false', meaning: 'let re-enrollment keep the old key' },
  {
    name: 'FLEETGATE_PKI_HTTP_PORT',
    default: '8080',
    meaning: 'plain-HTTP listener for /crl and /ocsp only (0 = any free port, off = none)',
  },
  {
    name: 'FLEETGATE_PKI_PUBLIC_URL',
    default: 'http://<public host>:<pki port>',
    meaning: 'base URL of /crl and /ocsp put in certificates',
  },
  { name: 'FLEETGATE_OCSP_RATE_PER_IP', default: '50', meaning: 'OCSP requests/s per source address (0 = unlimited)' },
  { name: 'FLEETGATE_OCSP_RATE_BURST', default: '100', meaning: 'OCSP requests one address may send at once' },
  { name: 'FLEETGATE_LOG_LEVEL', default: 'info', meaning: 'fatal, error, warn, info, debug, trace, silent' },
  { name: 'FLEETGATE_MQTT_HANDSHAKE_TIMEOUT', default: '5s', meaning: 'TLS handshake (and then CONNECT) deadline' },
  { name: 'FLEETGATE_MQTT_MAX_PACKET_SIZE', default: '131072', meaning: 'largest MQTT packet in bytes' },
  {
    name: 'FLEETGATE_MQTT_PUBLISH_RATE',
    default: '500',
    meaning: 'PUBLISH (+ PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ) packets/s per client (0 = unlimited)',
  },
  { name: 'FLEETGATE_MQTT_PUBLISH_BURST', default: '2 x rate', meaning: 'publish burst per client' },
  { name: 'FLEETGATE_MQTT_CONN_RATE_PER_IP', default: '500', meaning: 'new connections/s per IP (0 = unlimited)' },
  { name: 'FLEETGATE_MQTT_MAX_HANDSHAKES', default: '1000', meaning: 'TLS handshakes in flight at once' },
  {
    name: 'FLEETGATE_MQTT_MAX_QUEUED',
    default: '1000',
    meaning: 'unacknowledged QoS 1/2 messages kept per persistent session (0 = unlimited)',
  },
  {
    name: 'FLEETGATE_MQTT_READONLY_TOPICS',
    default: 'fleet/broadcast/#',
    meaning: 'filters every device may subscribe to',
  },
  { name: 'FLEETGATE_MQTT_SERVICE_ACL', default: '(see README)', meaning: 'JSON rights per service name' },
  { name: 'FLEETGATE_MQTT_TICKET_ROTATION', default: '24h', meaning: 'TLS ticket key rotation period' },
  { name: 'FLEETGATE_MQTT_TICKET_LIFETIME', default: '24h', meaning: 'TLS session ticket lifetime' },
  { name: 'FLEETGATE_MQTT_REVOCATION_RESYNC', default: '60s', meaning: 'full reload of revoked serials' },
  {
    name: 'FLEETGATE_MQTT_REVOCATION_MAX_AGE',
    default: '5m',
    meaning: 'refuse new connections when revocation data is older',
  },
  { name: 'FLEETGATE_MQTT_PRESENCE_FLUSH', default: '10s', meaning: 'batch interval of online/last-seen writes' },
  { name: 'FLEETGATE_WORKERS', default: 'number of cores', meaning: 'broker worker processes (serve --workers N)' },
  {
    name: 'FLEETGATE_WORKER_SCHEDULING',
    default: 'none',
    meaning: 'rr: primary hands connections to workers; none: workers accept directly',
  },
  {
    name: 'FLEETGATE_TLS_TICKETS',
    default: '1',
    meaning: 'TLS 1.3 session tickets per handshake (1; 2 = OpenSSL default, also when OPENSSL_CONF is set)',
  },
  { name: 'REDIS_URL', default: '(unset: no cluster)', meaning: 'redis:// URL shared by the nodes of a cluster' },
  { name: 'FLEETGATE_REDIS_KEY_PREFIX', default: 'fleetgate:', meaning: 'prefix of fleetgate keys in Redis' },
  {
    name: 'FLEETGATE_METRICS_TOKEN_FILE',
    default: '(unset: /metrics open)',
    meaning: 'file with the bearer token /metrics requires',
  },
  {
    name: 'FLEETGATE_METRICS_ADDRESS',
    default: '(unset: on the API)',
    meaning: 'host:port of a plain-HTTP listener for /metrics only',
  },
];
