/**
 * Parsers of configuration values: each turns the (trimmed, non-empty) text of one environment
 * variable into a typed value or throws ConfigError naming the variable. The schema in config.ts
 * pairs each variable with one of these; the messages are the ones operators see at start-up.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { FleetgateError } from './errors.js';
import { type Pkcs11Uri, Pkcs11UriError, parsePkcs11Uri } from './hsm/pkcs11-uri.js';
import { SERVICE_NAME_PATTERN } from './identifiers.js';
import { redactUserinfo } from './redact.js';

export class ConfigError extends FleetgateError {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super('CONFIG_INVALID', `${variable} ${message}`, { variable });
  }
}

/** What a parser knows besides the value: the variable it reads and the directory paths resolve against. */
export interface ParseContext {
  name: string;
  cwd: string;
}

export type Parser<T> = (value: string, ctx: ParseContext) => T;

/** Rights of a backend service on the broker: MQTT topic filters it may subscribe / publish to. */
export interface ServiceRights {
  subscribe: string[];
  publish: string[];
}

export const DEFAULT_SERVICE_RIGHTS: ServiceRights = {
  subscribe: ['devices/+/#'],
  publish: ['devices/+/commands/#'],
};

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses "90s", "15m", "24h", "30d" or a bare number of seconds. Returns milliseconds or null. */
export function parseDuration(value: string): number | null {
  const m = /^(\d{1,9})(ms|s|m|h|d)?$/.exec(value.trim());
  if (!m) return null;
  const n = Number(m[1]);
  const ms = n * (DURATION_UNITS[m[2] ?? 's'] ?? 1_000);
  return ms > 0 ? ms : null;
}

export const text: Parser<string> = (v) => v;

export const port: Parser<number> = (v, { name }) => {
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) {
    throw new ConfigError(name, `must be a port number 0-65535 (got ${JSON.stringify(v)})`);
  }
  return Number(v);
};

/** A port, 0 (any free port) or `off` (null: no listener). */
export const portOrOff: Parser<number | null> = (v, { name }) => {
  if (v.toLowerCase() === 'off') return null;
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) {
    throw new ConfigError(name, `must be a port number 0-65535 or off (got ${JSON.stringify(v)})`);
  }
  return Number(v);
};

export function wholeNumber(min: number, max: number): Parser<number> {
  return (v, { name }) => {
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
      throw new ConfigError(name, `must be a whole number from ${min} to ${max} (got ${JSON.stringify(v)})`);
    }
    return Number(v);
  };
}

export function oneOf<T extends string>(allowed: readonly T[]): Parser<T> {
  return (v, { name }) => {
    if (!(allowed as readonly string[]).includes(v)) {
      throw new ConfigError(name, `must be one of ${allowed.join(', ')} (got ${JSON.stringify(v)})`);
    }
    return v as T;
  };
}

export const bool: Parser<boolean> = (v, { name }) => {
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new ConfigError(name, `must be true or false (got ${JSON.stringify(v)})`);
};

export function duration(maxMs: number): Parser<number> {
  return (v, { name }) => {
    const ms = parseDuration(v);
    if (ms === null || ms > maxMs) {
      throw new ConfigError(name, `must be a duration like 90s, 15m, 24h or 30d (got ${JSON.stringify(v)})`);
    }
    return ms;
  };
}

/** A value matching `pattern`, else `must ${rule}`. */
export function matching(pattern: RegExp, rule: string, echo = true): Parser<string> {
  return (v, { name }) => {
    if (!pattern.test(v))
      throw new ConfigError(name, echo ? `must ${rule} (got ${JSON.stringify(v)})` : `must ${rule}`);
    return v;
  };
}

/** A path (relative ones resolve against the working directory); NUL never names a file. */
export const directory: Parser<string> = (v, { name, cwd }) => {
  if (v.includes('\0')) throw new ConfigError(name, 'must be a path');
  return path.resolve(cwd, v);
};

const HOSTNAME =
  /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export const host: Parser<string> = (v, { name }) => {
  // A top-level label is never all digits (RFC 3696 section 2; WHATWG URL parsing takes such a
  // name for an IPv4 address): 999.1.1.1 or 1.2.3 would pass the pattern and break every URL.
  const lastLabel = v.split('.').pop() ?? '';
  if (isIP(v) === 0 && (!HOSTNAME.test(v) || /^[0-9]+$/.test(lastLabel))) {
    throw new ConfigError(name, `must be an IP address or host name (got ${JSON.stringify(v)})`);
  }
  return v;
};

export interface ServerNames {
  dnsNames: string[];
  ipAddresses: string[];
}

export const serverNames: Parser<ServerNames> = (v, { name }) => {
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
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
};

/**
 * A URL of one of `schemes` (e.g. postgres/postgresql). Errors never echo the URL: it may carry a
 * password.
 */
export function secretUrl(schemes: readonly [string, string]): Parser<string> {
  const rule = `must be a ${schemes[0]}:// or ${schemes[1]}:// URL`;
  return (v, { name }) => {
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      throw new ConfigError(name, `${rule} (not a valid URL)`);
    }
    if (!schemes.some((s) => url.protocol === `${s}:`)) {
      throw new ConfigError(name, `${rule} (got scheme ${JSON.stringify(url.protocol)})`);
    }
    return v;
  };
}

export const databaseUrl = secretUrl(['postgres', 'postgresql']);

const redisSchemeUrl = secretUrl(['redis', 'rediss']);

export const redisUrl: Parser<string> = (v, ctx) => {
  redisSchemeUrl(v, ctx);
  const url = new URL(v);
  if (url.pathname !== '' && url.pathname !== '/' && !/^\/\d{1,5}$/.test(url.pathname)) {
    throw new ConfigError(ctx.name, 'must be a redis:// or rediss:// URL whose path, if any, is a database number');
  }
  return v;
};

/** An http(s) base URL without query, fragment or credentials; the trailing slash is dropped. */
export const publicUrl: Parser<string> = (v, { name }) => {
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
};

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

export const topicFilters: Parser<string[]> = (v, { name }) => {
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
};

/** JSON rights per service name; '*' (the default for services not listed) is always present. */
export const serviceAcl: Parser<Record<string, ServiceRights>> = (v, { name }) => {
  const acl: Record<string, ServiceRights> = { '*': DEFAULT_SERVICE_RIGHTS };
  const usage = 'must be JSON like {"NAME or *": {"subscribe": ["devices/+/#"], "publish": ["devices/+/commands/#"]}}';
  let parsed: unknown;
  try {
    parsed = JSON.parse(v);
  } catch {
    throw new ConfigError(name, `${usage} (not valid JSON)`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(name, usage);
  for (const [service, rights] of Object.entries(parsed as Record<string, unknown>)) {
    if (service !== '*' && !SERVICE_NAME_PATTERN.test(service)) {
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
};

/** A file named by a setting (relative to `cwd`), read as UTF-8; the error names the file, never its content. */
function readConfigFile(v: string, name: string, cwd: string): { file: string; content: string } {
  const file = path.resolve(cwd, v);
  try {
    return { file, content: readFileSync(file, 'utf8') };
  } catch (e) {
    throw new ConfigError(name, `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/**
 * A file holding a bearer token (RFC 6750 2.1: b64token), e.g. the one Prometheus sends from its
 * `authorization.credentials_file`. Surrounding whitespace (a trailing newline) is ignored, as
 * Prometheus does. Errors name the file, never its content.
 */
export const tokenFile: Parser<string> = (v, { name, cwd }) => {
  const { file, content } = readConfigFile(v, name, cwd);
  const token = content.trim();
  if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(token) || token.length < 16 || token.length > 1024) {
    throw new ConfigError(
      name,
      `${file} must hold one token of 16-1024 characters from A-Z a-z 0-9 - . _ ~ + / (RFC 6750 b64token)`,
    );
  }
  return token;
};

/** An RFC 7512 pkcs11: URI (hsm/pkcs11-uri.ts); the message never repeats the value (it may hold a PIN). */
export const pkcs11Uri: Parser<Pkcs11Uri> = (v, { name }) => {
  try {
    return parsePkcs11Uri(v);
  } catch (e) {
    if (e instanceof Pkcs11UriError) throw new ConfigError(name, e.message);
    throw e;
  }
};

/** An absolute path to a file that is loaded as code (a PKCS#11 module): never resolved against the cwd. */
export const absolutePath: Parser<string> = (v, { name }) => {
  if (v.includes('\0') || !path.isAbsolute(v)) throw new ConfigError(name, 'must be an absolute path');
  return path.normalize(v);
};

/** A path to a file read later (relative ones resolve against the working directory). */
export const filePath: Parser<string> = (v, { name, cwd }) => {
  if (v.includes('\0')) throw new ConfigError(name, 'must be a path');
  return path.resolve(cwd, v);
};

/** host:port, with an IPv6 address in brackets ([::1]:9464); port 0 = any free port. */
export const listenAddress: Parser<{ host: string; port: number }> = (v, { name }) => {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  const h = m?.[1] ?? m?.[2] ?? '';
  const lastLabel = h.split('.').pop() ?? '';
  const hostOk =
    m?.[1] !== undefined ? isIP(h) === 6 : isIP(h) === 4 || (HOSTNAME.test(h) && !/^[0-9]+$/.test(lastLabel));
  if (!m || !hostOk || Number(m[3]) > 65535) {
    throw new ConfigError(name, `must be host:port, e.g. 127.0.0.1:9464 or [::1]:9464 (got ${JSON.stringify(v)})`);
  }
  return { host: h, port: Number(m[3]) };
};

/**
 * A PEM file of one or more X.509 certificates (RFC 7468 section 5), e.g. the TPM manufacturer CAs
 * whose EK certificates are trusted. The value is the file's PEM text; every certificate in it
 * must parse, so a truncated bundle stops start-up instead of silently trusting fewer CAs.
 */
export const certificateBundleFile: Parser<string> = (v, { name, cwd }) => {
  const { file, content } = readConfigFile(v, name, cwd);
  const blocks = content.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new ConfigError(name, `${file} holds no PEM certificate`);
  blocks.forEach((b, i) => {
    try {
      new X509Certificate(b);
    } catch {
      throw new ConfigError(name, `certificate ${i + 1} of ${file} does not parse`);
    }
  });
  return blocks.join('\n');
};
