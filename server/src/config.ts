/**
 * The one typed configuration of fleetgate: environment variables + defaults, validated once at
 * start. A bad value stops start-up with one line naming the variable (ConfigError). Nothing else
 * in the code base reads process.env for settings.
 *
 * Every variable is declared once, in CONFIG_SCHEMA below (name, parser, default, help text,
 * section). `loadConfig`, `serve --help` and the README's tables (`node scripts/config-docs.mjs
 * --write`) are all produced from it; test/unit/config-docs.test.ts fails when they disagree.
 * A new setting: add its field to Config, its entry to CONFIG_SCHEMA, and one line to loadConfig.
 */
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import * as p from './config-parsers.js';
import { ConfigError, type Parser, type ServerNames, type ServiceRights } from './config-parsers.js';
import type { Pkcs11Uri } from './hsm/pkcs11-uri.js';

export {
  ConfigError,
  DEFAULT_SERVICE_RIGHTS,
  isTopicFilter,
  parseDuration,
  type ServiceRights,
} from './config-parsers.js';

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
  serverNames: ServerNames;
  caKeyAlgorithm: CaKeyAlgorithmSetting;
  caName: string;
  /**
   * Where the issuing CA key lives: a PKCS#8 file in the data dir, or a PKCS#11 token
   * (docs/hsm.md). The PIN file is read when the token is opened, so the PIN is never held here.
   */
  caKey: CaKeySetting;
  /** Device certificate validity (RFC 5280 notAfter - notBefore, before the 5 min backdate). */
  certValidityDays: number;
  /** Default lifetime of an enrollment token. */
  tokenTtlMs: number;
  /** Web console session expiry (docs/console.md). */
  consoleSessions: { idleMs: number; absoluteMs: number; max: number };
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
  /** Bearer token /metrics requires (from FLEETGATE_METRICS_TOKEN_FILE); undefined = /metrics is open. */
  metricsToken: string | undefined;
  /** Plain-HTTP listener serving only /metrics (then not on the public API); undefined = the API serves it. */
  metricsAddress: { host: string; port: number } | undefined;
  /**
   * PEM of the TPM manufacturer CAs whose EK certificates are trusted (FLEETGATE_TPM_EK_ROOTS);
   * undefined = TPM attestation is off (docs/attestation.md).
   */
  tpmEkRootsPem: string | undefined;
}

export type CaKeySetting = { kind: 'file' } | { kind: 'pkcs11'; uri: Pkcs11Uri; module: string; pinFile: string };

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
  /**
   * Close a client's connection on an ACL violation (PUBLISH or SUBSCRIBE outside its rights)
   * instead of the spec's silent acknowledgement / SUBACK 0x80.
   */
  disconnectOnAclViolation: boolean;
  /**
   * The least key assurance a device certificate needs to be admitted (its certificatePolicies,
   * mqtt/key-assurance.ts): `none` admits any, `tpm-attested` only TPM-attested keys.
   */
  requireKeyAssurance: 'none' | 'tpm-attested';
}

type Env = Record<string, string | undefined>;

/** Where a variable is documented: the README's main settings table or the broker's. */
export type ConfigSection = 'general' | 'mqtt';

/** What a default computed at start may use. */
export interface DefaultContext {
  cwd: string;
}

/** One environment variable: how to read it, its default and how it is documented. */
export interface Setting<T> {
  env: string;
  section: ConfigSection;
  /** Reads the trimmed, non-empty value; an unset or blank variable takes `default` instead. */
  parse: Parser<T>;
  /** The value when unset; a function when it is computed at start (cwd, number of cores). */
  default: T | ((ctx: DefaultContext) => T);
  /** The default as `--help` shows it. */
  defaultText: string;
  /** One line for `--help`: what the variable sets. */
  help: string;
  /** Markdown for the README table when it says more than `--help` (links, code spans). */
  readme?: { default?: string; help?: string };
}

/** T comes from the parser alone, so a default like 'P-256' keeps the parser's literal type. */
function setting<T>(
  s: Omit<Setting<T>, 'default'> & { default: NoInfer<T> | ((ctx: DefaultContext) => NoInfer<T>) },
): Setting<T> {
  return s;
}

/** For settings whose default is derived from other settings in loadConfig (documented by defaultText). */
const UNSET = undefined;

const DAY = 86_400_000;

/**
 * Every variable fleetgate reads, in the order `--help` and the README list them. The keys are
 * the names loadConfig uses; the value types come from the parsers.
 */
export const CONFIG_SCHEMA = {
  dataDir: setting({
    env: 'FLEETGATE_DATA_DIR',
    section: 'general',
    parse: p.directory,
    default: ({ cwd }) => p.directory('.fleetgate', { name: 'FLEETGATE_DATA_DIR', cwd }),
    defaultText: './.fleetgate',
    help: 'embedded DB, CA keys (0600), operator credential',
    readme: { help: 'data dir (above)' },
  }),
  databaseUrl: setting<string | undefined>({
    env: 'DATABASE_URL',
    section: 'general',
    parse: p.databaseUrl,
    default: UNSET,
    defaultText: '(unset: embedded PGlite)',
    help: 'PostgreSQL URL',
    readme: { default: 'unset', help: 'PostgreSQL URL; unset means the embedded PGlite database' },
  }),
  host: setting({
    env: 'FLEETGATE_HOST',
    section: 'general',
    parse: p.host,
    default: '127.0.0.1',
    defaultText: '127.0.0.1',
    help: 'bind address (0.0.0.0 to serve the network)',
    readme: { help: 'bind address; `0.0.0.0` to serve the network' },
  }),
  apiPort: setting({
    env: 'FLEETGATE_API_PORT',
    section: 'general',
    parse: p.port,
    default: 8443,
    defaultText: '8443',
    help: 'HTTPS API, EST, CRL, OCSP',
  }),
  mqttPort: setting({
    env: 'FLEETGATE_MQTT_PORT',
    section: 'general',
    parse: p.port,
    default: 8883,
    defaultText: '8883',
    help: 'MQTT over mTLS',
  }),
  publicUrl: setting<string | undefined>({
    env: 'FLEETGATE_PUBLIC_URL',
    section: 'general',
    parse: p.publicUrl,
    default: UNSET,
    defaultText: 'https://<host>:<api port>',
    help: 'base URL put in certificates (CRL, OCSP)',
    readme: {
      default: '`https://<host>:<api port>`',
      help: 'base URL of the API and EST as clients reach it; its host also names the plain-HTTP CRL/OCSP URLs (below)',
    },
  }),
  pkiHttpPort: setting({
    env: 'FLEETGATE_PKI_HTTP_PORT',
    section: 'general',
    parse: p.portOrOff,
    default: 8080,
    defaultText: '8080',
    help: 'plain-HTTP listener for /crl and /ocsp only (0 = any free port, off = none)',
    readme: { help: 'plain-HTTP listener serving only `/crl` and `/ocsp`; `0` = any free port, `off` = none' },
  }),
  pkiPublicUrl: setting<string | undefined>({
    env: 'FLEETGATE_PKI_PUBLIC_URL',
    section: 'general',
    parse: p.publicUrl,
    default: UNSET,
    defaultText: 'http://<public host>:<pki port>',
    help: 'base URL of /crl and /ocsp put in certificates',
    readme: {
      default: '`http://<public host>:<pki port>`',
      help: 'base URL of `/crl` and `/ocsp` written into new certificates (CRL distribution point, AIA OCSP)',
    },
  }),
  serverNames: setting({
    env: 'FLEETGATE_SERVER_NAMES',
    section: 'general',
    parse: p.serverNames,
    default: () => ({ dnsNames: [], ipAddresses: [] }),
    defaultText: '(none)',
    help: 'extra DNS names/IPs for the server certificate',
    readme: {
      default: 'none',
      help: "extra DNS names / IPs in the server certificate (localhost, 127.0.0.1, the bind host and the public URL's host are always there)",
    },
  }),
  caKeyAlgorithm: setting({
    env: 'FLEETGATE_CA_KEY_ALGORITHM',
    section: 'general',
    parse: p.oneOf(['P-256', 'P-384', 'RSA-3072'] as const),
    default: 'P-256',
    defaultText: 'P-256',
    help: 'P-256, P-384 or RSA-3072 (first start only)',
    readme: { help: '`P-256`, `P-384` or `RSA-3072`; used only when the CA is created' },
  }),
  caName: setting({
    env: 'FLEETGATE_CA_NAME',
    section: 'general',
    parse: p.matching(
      /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/,
      'be 1-64 letters, digits, spaces, dots, dashes or underscores',
      false,
    ),
    default: 'fleetgate',
    defaultText: 'fleetgate',
    help: 'name in the CA subjects (first start only)',
    readme: { help: 'name in the CA subjects; used only when the CA is created' },
  }),
  caKeyUri: setting<Pkcs11Uri | undefined>({
    env: 'FLEETGATE_CA_KEY_URI',
    section: 'general',
    parse: p.pkcs11Uri,
    default: UNSET,
    defaultText: '(unset: key file in the data dir)',
    help: 'RFC 7512 pkcs11: URI of the issuing CA key in a token',
    readme: {
      default: 'unset (key file in the data dir)',
      help: 'RFC 7512 `pkcs11:` URI (token and object) of the issuing CA key in an HSM; see [docs/hsm.md](docs/hsm.md)',
    },
  }),
  pkcs11Module: setting<string | undefined>({
    env: 'FLEETGATE_PKCS11_MODULE',
    section: 'general',
    parse: p.absolutePath,
    default: UNSET,
    defaultText: '(unset)',
    help: 'path of the PKCS#11 module (.so) for FLEETGATE_CA_KEY_URI',
    readme: { default: 'unset', help: 'absolute path of the PKCS#11 module (`.so`) serving `FLEETGATE_CA_KEY_URI`' },
  }),
  pkcs11PinFile: setting<string | undefined>({
    env: 'FLEETGATE_PKCS11_PIN_FILE',
    section: 'general',
    parse: p.filePath,
    default: UNSET,
    defaultText: '(unset)',
    help: "file holding the token's user PIN (read at start, never logged)",
    readme: {
      default: 'unset',
      help: "file holding the token's user PIN (0600; read when the token is opened, never logged or on a command line)",
    },
  }),
  certValidityDays: setting({
    env: 'FLEETGATE_CERT_VALIDITY_DAYS',
    section: 'general',
    parse: p.wholeNumber(1, 825),
    default: 30,
    defaultText: '30',
    help: 'device certificate lifetime',
  }),
  consoleIdleMs: setting({
    env: 'FLEETGATE_CONSOLE_IDLE_TIMEOUT',
    section: 'general',
    parse: p.duration(DAY),
    default: 15 * 60_000,
    defaultText: '15m',
    help: 'web console: a session unused this long ends (sign in again)',
  }),
  consoleAbsoluteMs: setting({
    env: 'FLEETGATE_CONSOLE_SESSION_LIFETIME',
    section: 'general',
    parse: p.duration(7 * DAY),
    default: 8 * 60 * 60_000,
    defaultText: '8h',
    help: 'web console: a session ends this long after sign-in, used or not',
  }),
  tokenTtlMs: setting({
    env: 'FLEETGATE_TOKEN_TTL',
    section: 'general',
    parse: p.duration(365 * DAY),
    default: DAY,
    defaultText: '24h',
    help: 'default enrollment token lifetime',
  }),
  serviceSelfRenew: setting({
    env: 'FLEETGATE_SERVICE_SELF_RENEW',
    section: 'general',
    parse: p.bool,
    default: true,
    defaultText: 'true',
    help: 'let service certificates renew over EST',
    readme: {
      help: 'whether service certificates may renew themselves over EST `simplereenroll` (see [Service renewal](#service-renewal))',
    },
  }),
  serviceMaxLifetimeMs: setting({
    env: 'FLEETGATE_SERVICE_MAX_LIFETIME',
    section: 'general',
    parse: p.duration(3650 * DAY),
    default: 365 * DAY,
    defaultText: '365d',
    help: 'service renewals refused this long after `service create` (up to 3650d)',
    readme: {
      help: 'service renewals are refused this long after `service create` issued the credential (at most `3650d`)',
    },
  }),
  estRatePerIp: setting({
    env: 'FLEETGATE_EST_RATE_PER_IP',
    section: 'general',
    parse: p.wholeNumber(0, 1_000_000),
    default: 1_000,
    defaultText: '1000',
    help: 'EST requests/s per source address (0 = unlimited)',
    readme: {
      help: 'EST requests per second per source address (IPv6: per /64); `0` = unlimited (see [EST rate limits](#est-rate-limits))',
    },
  }),
  estBurstPerIp: setting({
    env: 'FLEETGATE_EST_BURST_PER_IP',
    section: 'general',
    parse: p.wholeNumber(1, 10_000_000),
    default: 2_000,
    defaultText: '2000',
    help: 'EST requests one address may send at once',
  }),
  estAuthFailuresPerMin: setting({
    env: 'FLEETGATE_EST_AUTH_FAILURES_PER_MIN',
    section: 'general',
    parse: p.wholeNumber(0, 1_000_000),
    default: 10,
    defaultText: '10',
    help: 'failed EST Basic authentications per minute per device id (0 = unlimited)',
    readme: { help: 'failed `simpleenroll` authentications per minute per device id; `0` = unlimited' },
  }),
  estAuthFailureBurst: setting({
    env: 'FLEETGATE_EST_AUTH_FAILURE_BURST',
    section: 'general',
    parse: p.wholeNumber(1, 1_000_000),
    default: 10,
    defaultText: '10',
    help: 'failed authentications one id may have at once',
    readme: { help: 'failed authentications one device id may have at once before it is slowed' },
  }),
  httpRequestTimeoutMs: setting({
    env: 'FLEETGATE_HTTP_REQUEST_TIMEOUT',
    section: 'general',
    parse: p.duration(600_000),
    default: 30_000,
    defaultText: '30s',
    help: 'deadline for a whole HTTP request',
    readme: { help: 'deadline for a whole HTTP request (stalled bodies get 408)' },
  }),
  workers: setting({
    env: 'FLEETGATE_WORKERS',
    section: 'general',
    parse: p.wholeNumber(1, 256),
    default: () => availableParallelism(),
    defaultText: 'number of cores',
    help: 'broker worker processes (serve --workers N)',
    readme: {
      help: 'MQTT broker worker processes (`serve --workers N`); `1` = broker in the serve process',
    },
  }),
  workerScheduling: setting({
    env: 'FLEETGATE_WORKER_SCHEDULING',
    section: 'general',
    parse: p.oneOf(['rr', 'none'] as const),
    default: 'none',
    defaultText: 'none',
    help: 'rr: primary hands connections to workers; none: workers accept directly',
    readme: {
      help: '`none`: workers accept directly (cheaper, spread left to the kernel); `rr`: the primary hands connections to workers (even spread)',
    },
  }),
  tlsTickets: setting<1 | 2>({
    env: 'FLEETGATE_TLS_TICKETS',
    section: 'general',
    parse: (v, ctx) => (p.oneOf(['1', '2'] as const)(v, ctx) === '1' ? 1 : 2),
    default: 1,
    defaultText: '1',
    help: 'TLS 1.3 session tickets per handshake (1; 2 = OpenSSL default, also when OPENSSL_CONF is set)',
    readme: {
      help: "TLS 1.3 session tickets per handshake; `2` is OpenSSL's default (see [TLS tickets](#tls-session-tickets-and-the-serve-launcher))",
    },
  }),
  redisUrl: setting<string | undefined>({
    env: 'REDIS_URL',
    section: 'general',
    parse: p.redisUrl,
    default: UNSET,
    defaultText: '(unset: no cluster)',
    help: 'redis:// URL shared by the nodes of a cluster',
    readme: { default: 'unset', help: '`redis://` or `rediss://` URL shared by the nodes of a cluster (see Scaling)' },
  }),
  redisKeyPrefix: setting({
    env: 'FLEETGATE_REDIS_KEY_PREFIX',
    section: 'general',
    parse: p.matching(/^[A-Za-z0-9._:-]{1,64}$/, 'be 1-64 letters, digits, dots, colons, dashes or underscores'),
    default: 'fleetgate:',
    defaultText: 'fleetgate:',
    help: 'prefix of fleetgate keys in Redis',
    readme: { help: "prefix of fleetgate's keys in Redis (sessions, retained messages)" },
  }),
  allowKeyReuse: setting({
    env: 'FLEETGATE_ALLOW_KEY_REUSE',
    section: 'general',
    parse: p.bool,
    default: false,
    defaultText: 'false',
    help: 'let re-enrollment keep the old key',
  }),
  ocspRatePerIp: setting({
    env: 'FLEETGATE_OCSP_RATE_PER_IP',
    section: 'general',
    parse: p.wholeNumber(0, 1_000_000),
    default: 50,
    defaultText: '50',
    help: 'OCSP requests/s per source address (0 = unlimited)',
    readme: {
      help: 'OCSP requests per second per source address (IPv6: per /64); `0` = unlimited; over it: `tryLater`',
    },
  }),
  ocspRateBurst: setting({
    env: 'FLEETGATE_OCSP_RATE_BURST',
    section: 'general',
    parse: p.wholeNumber(1, 10_000_000),
    default: 100,
    defaultText: '100',
    help: 'OCSP requests one address may send at once',
  }),
  logLevel: setting({
    env: 'FLEETGATE_LOG_LEVEL',
    section: 'general',
    parse: p.oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
    default: 'info',
    defaultText: 'info',
    help: 'fatal, error, warn, info, debug, trace, silent',
    readme: { help: '`fatal` … `trace`, `silent`' },
  }),
  metricsToken: setting<string | undefined>({
    env: 'FLEETGATE_METRICS_TOKEN_FILE',
    section: 'general',
    parse: p.tokenFile,
    default: UNSET,
    defaultText: '(unset: /metrics open)',
    help: 'file with the bearer token /metrics requires',
    readme: {
      default: 'unset (`/metrics` open)',
      help: 'file holding the bearer token `/metrics` requires (see [Monitoring](#monitoring-metrics))',
    },
  }),
  metricsAddress: setting<{ host: string; port: number } | undefined>({
    env: 'FLEETGATE_METRICS_ADDRESS',
    section: 'general',
    parse: p.listenAddress,
    default: UNSET,
    defaultText: '(unset: on the API)',
    help: 'host:port of a plain-HTTP listener for /metrics only',
    readme: {
      default: 'unset (on the API)',
      help: '`host:port` of a plain-HTTP listener serving only `/metrics` (then not on the API)',
    },
  }),
  tpmEkRootsPem: setting<string | undefined>({
    env: 'FLEETGATE_TPM_EK_ROOTS',
    section: 'general',
    parse: p.certificateBundleFile,
    default: UNSET,
    defaultText: '(unset: TPM attestation off)',
    help: 'PEM file of TPM manufacturer CAs trusted for EK certificates',
    readme: {
      default: 'unset (attestation off)',
      help: 'PEM file of the TPM manufacturer CAs (roots and issuing CAs) whose EK certificates are trusted; unset turns TPM attestation off (see [docs/attestation.md](docs/attestation.md))',
    },
  }),
  mqttHandshakeTimeoutMs: setting({
    env: 'FLEETGATE_MQTT_HANDSHAKE_TIMEOUT',
    section: 'mqtt',
    parse: p.duration(120_000),
    default: 5_000,
    defaultText: '5s',
    help: 'TLS handshake (and then CONNECT) deadline',
    readme: { help: 'TLS handshake deadline, and then the deadline for CONNECT' },
  }),
  mqttMaxPacketSize: setting({
    env: 'FLEETGATE_MQTT_MAX_PACKET_SIZE',
    section: 'mqtt',
    parse: p.wholeNumber(64, 268_435_455),
    default: 131_072,
    defaultText: '131072',
    help: 'largest MQTT packet in bytes',
    readme: { help: 'largest MQTT packet (bytes of remaining length)' },
  }),
  mqttPublishRate: setting({
    env: 'FLEETGATE_MQTT_PUBLISH_RATE',
    section: 'mqtt',
    parse: p.wholeNumber(0, 1_000_000),
    default: 500,
    defaultText: '500',
    help: 'PUBLISH (+ PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ) packets/s per client (0 = unlimited)',
    readme: {
      help: 'PUBLISH (+ PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ) packets per second per connection; `0` = unlimited',
    },
  }),
  mqttPublishBurst: setting<number | undefined>({
    env: 'FLEETGATE_MQTT_PUBLISH_BURST',
    section: 'mqtt',
    parse: p.wholeNumber(1, 10_000_000),
    default: UNSET,
    defaultText: '2 x rate',
    help: 'publish burst per client',
    readme: { help: 'publish bucket size' },
  }),
  mqttConnRatePerIp: setting({
    env: 'FLEETGATE_MQTT_CONN_RATE_PER_IP',
    section: 'mqtt',
    parse: p.wholeNumber(0, 1_000_000),
    default: 500,
    defaultText: '500',
    help: 'new connections/s per IP (0 = unlimited)',
    readme: { help: 'new connections per second per source IP; `0` = unlimited' },
  }),
  mqttMaxHandshakes: setting({
    env: 'FLEETGATE_MQTT_MAX_HANDSHAKES',
    section: 'mqtt',
    parse: p.wholeNumber(1, 1_000_000),
    default: 1_000,
    defaultText: '1000',
    help: 'TLS handshakes in flight at once',
    readme: { help: 'TLS handshakes in flight' },
  }),
  mqttMaxQueuedPerSession: setting({
    env: 'FLEETGATE_MQTT_MAX_QUEUED',
    section: 'mqtt',
    parse: p.wholeNumber(0, 10_000_000),
    default: 1_000,
    defaultText: '1000',
    help: 'unacknowledged QoS 1/2 messages kept per persistent session (0 = unlimited)',
    readme: { help: 'unacknowledged QoS 1/2 messages kept per persistent session; `0` = unlimited' },
  }),
  mqttReadonlyTopics: setting({
    env: 'FLEETGATE_MQTT_READONLY_TOPICS',
    section: 'mqtt',
    parse: p.topicFilters,
    default: () => ['fleet/broadcast/#'],
    defaultText: 'fleet/broadcast/#',
    help: 'filters every device may subscribe to',
    readme: { help: 'comma-separated filters every device may subscribe to' },
  }),
  mqttServiceAcl: setting({
    env: 'FLEETGATE_MQTT_SERVICE_ACL',
    section: 'mqtt',
    parse: p.serviceAcl,
    default: () => ({ '*': p.DEFAULT_SERVICE_RIGHTS }),
    defaultText: '(see README)',
    help: 'JSON rights per service name',
    readme: { default: 'see above', help: 'JSON rights per service name (`*` for the rest)' },
  }),
  mqttTicketRotationMs: setting({
    env: 'FLEETGATE_MQTT_TICKET_ROTATION',
    section: 'mqtt',
    parse: p.duration(365 * DAY),
    default: DAY,
    defaultText: '24h',
    help: 'TLS ticket key rotation period',
    readme: { help: 'ticket key period (all processes switch at the same edge)' },
  }),
  mqttTicketLifetimeMs: setting({
    env: 'FLEETGATE_MQTT_TICKET_LIFETIME',
    section: 'mqtt',
    parse: p.duration(7 * DAY),
    default: DAY,
    defaultText: '24h',
    help: 'TLS session ticket lifetime',
    readme: { help: 'TLS session / ticket lifetime' },
  }),
  mqttRevocationResyncMs: setting({
    env: 'FLEETGATE_MQTT_REVOCATION_RESYNC',
    section: 'mqtt',
    parse: p.duration(DAY),
    default: 60_000,
    defaultText: '60s',
    help: 'full reload of revoked serials',
    readme: { help: 'full reload of the revoked-serial set' },
  }),
  mqttRevocationMaxAgeMs: setting({
    env: 'FLEETGATE_MQTT_REVOCATION_MAX_AGE',
    section: 'mqtt',
    parse: p.duration(7 * DAY),
    default: 300_000,
    defaultText: '5m',
    help: 'refuse new connections when revocation data is older',
    readme: { help: 'refuse new connections when the revoked set is older (fail closed)' },
  }),
  mqttPresenceFlushMs: setting({
    env: 'FLEETGATE_MQTT_PRESENCE_FLUSH',
    section: 'mqtt',
    parse: p.duration(3_600_000),
    default: 10_000,
    defaultText: '10s',
    help: 'batch interval of online/last-seen writes',
    readme: { help: 'batch interval of online / last-seen writes (and the notAfter sweep)' },
  }),
  mqttDisconnectOnAclViolation: setting({
    env: 'FLEETGATE_MQTT_DISCONNECT_ON_ACL_VIOLATION',
    section: 'mqtt',
    parse: p.bool,
    default: false,
    defaultText: 'false',
    help: 'close a client that publishes or subscribes outside its rights',
    readme: {
      help: 'close the connection of a client that publishes or subscribes outside its rights, instead of acknowledging and dropping (see Topics above)',
    },
  }),
  mqttRequireKeyAssurance: setting({
    env: 'FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE',
    section: 'mqtt',
    parse: p.oneOf(['none', 'tpm-attested'] as const),
    default: 'none',
    defaultText: 'none',
    help: 'tpm-attested: refuse device certificates without the tpm-attested policy',
    readme: {
      help: '`tpm-attested`: refuse a device whose certificate lacks the tpm-attested policy (CONNACK 0x05 / 0x87, counted as `key_assurance`; see [docs/attestation.md](docs/attestation.md)); `none`: any key',
    },
  }),
};

type SettingValues = {
  [K in keyof typeof CONFIG_SCHEMA]: (typeof CONFIG_SCHEMA)[K] extends Setting<infer T> ? T : never;
};

/** The value of one setting: the parsed variable, or its default when unset or blank. */
function readSetting<T>(s: Setting<T>, env: Env, cwd: string): T {
  const raw = env[s.env]?.trim();
  if (raw === undefined || raw === '') {
    return typeof s.default === 'function' ? (s.default as (ctx: DefaultContext) => T)({ cwd }) : s.default;
  }
  return s.parse(raw, { name: s.env, cwd });
}

/** Reads every setting of the schema, in its order (the first bad variable throws). */
function readSettings(env: Env, cwd: string): SettingValues {
  const values: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(CONFIG_SCHEMA) as [string, Setting<unknown>][]) {
    values[key] = readSetting(s, env, cwd);
  }
  return values as SettingValues;
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
  const v = readSettings(env, cwd);
  if (v.mqttRevocationMaxAgeMs <= v.mqttRevocationResyncMs) {
    throw new ConfigError(
      'FLEETGATE_MQTT_REVOCATION_MAX_AGE',
      'must be longer than FLEETGATE_MQTT_REVOCATION_RESYNC (else every resync gap refuses connections)',
    );
  }
  return {
    caKey: caKeySetting(v.caKeyUri, v.pkcs11Module, v.pkcs11PinFile),
    dataDir: v.dataDir,
    databaseUrl: v.databaseUrl,
    host: v.host,
    apiPort: v.apiPort,
    mqttPort: v.mqttPort,
    publicUrl: v.publicUrl ?? advertisedUrl('https', v.host, v.apiPort),
    publicUrlExplicit: v.publicUrl !== undefined,
    serverNames: v.serverNames,
    caKeyAlgorithm: v.caKeyAlgorithm,
    caName: v.caName,
    certValidityDays: v.certValidityDays,
    tokenTtlMs: v.tokenTtlMs,
    consoleSessions: { idleMs: v.consoleIdleMs, absoluteMs: v.consoleAbsoluteMs, max: 10_000 },
    serviceSelfRenew: v.serviceSelfRenew,
    serviceMaxLifetimeMs: v.serviceMaxLifetimeMs,
    estRateLimits: {
      ratePerIp: v.estRatePerIp,
      burstPerIp: v.estBurstPerIp,
      authFailuresPerMin: v.estAuthFailuresPerMin,
      authFailureBurst: v.estAuthFailureBurst,
    },
    httpRequestTimeoutMs: v.httpRequestTimeoutMs,
    allowKeyReuse: v.allowKeyReuse,
    pkiHttpPort: v.pkiHttpPort,
    pkiPublicUrl: v.pkiPublicUrl,
    ocspRatePerIp: v.ocspRatePerIp,
    ocspRateBurst: v.ocspRateBurst,
    logLevel: v.logLevel,
    mqtt: {
      handshakeTimeoutMs: v.mqttHandshakeTimeoutMs,
      maxPacketSize: v.mqttMaxPacketSize,
      publishRate: v.mqttPublishRate,
      publishBurst: v.mqttPublishBurst ?? Math.max(1, v.mqttPublishRate * 2),
      connRatePerIp: v.mqttConnRatePerIp,
      maxHandshakes: v.mqttMaxHandshakes,
      maxQueuedPerSession: v.mqttMaxQueuedPerSession,
      readonlyTopics: v.mqttReadonlyTopics,
      serviceAcl: v.mqttServiceAcl,
      ticketRotationMs: v.mqttTicketRotationMs,
      ticketLifetimeMs: v.mqttTicketLifetimeMs,
      revocationResyncMs: v.mqttRevocationResyncMs,
      revocationMaxAgeMs: v.mqttRevocationMaxAgeMs,
      presenceFlushMs: v.mqttPresenceFlushMs,
      disconnectOnAclViolation: v.mqttDisconnectOnAclViolation,
      requireKeyAssurance: v.mqttRequireKeyAssurance,
    },
    workers: v.workers,
    workerScheduling: v.workerScheduling,
    tlsTickets: v.tlsTickets,
    redisUrl: v.redisUrl,
    redisKeyPrefix: v.redisKeyPrefix,
    metricsToken: v.metricsToken,
    metricsAddress: v.metricsAddress,
    tpmEkRootsPem: v.tpmEkRootsPem,
  };
}

/** The three PKCS#11 variables go together: a URI without its module or PIN, or the reverse, is a mistake. */
function caKeySetting(
  uri: Pkcs11Uri | undefined,
  module: string | undefined,
  pinFile: string | undefined,
): CaKeySetting {
  if (uri === undefined) {
    if (module !== undefined) {
      throw new ConfigError('FLEETGATE_PKCS11_MODULE', 'is set but FLEETGATE_CA_KEY_URI is not (which key?)');
    }
    if (pinFile !== undefined) {
      throw new ConfigError('FLEETGATE_PKCS11_PIN_FILE', 'is set but FLEETGATE_CA_KEY_URI is not (which key?)');
    }
    return { kind: 'file' };
  }
  if (module === undefined)
    throw new ConfigError('FLEETGATE_CA_KEY_URI', 'needs FLEETGATE_PKCS11_MODULE (the module path)');
  if (pinFile === undefined) throw new ConfigError('FLEETGATE_CA_KEY_URI', 'needs FLEETGATE_PKCS11_PIN_FILE (the PIN)');
  return { kind: 'pkcs11', uri, module, pinFile };
}

/** The variables `loadConfig` reads, for `--help` texts and docs (derived from CONFIG_SCHEMA). */
export const CONFIG_VARIABLES: readonly { name: string; default: string; meaning: string; section: ConfigSection }[] = (
  Object.values(CONFIG_SCHEMA) as Setting<unknown>[]
).map((s) => ({
  name: s.env,
  default: s.defaultText,
  meaning: s.help,
  section: s.section,
}));
