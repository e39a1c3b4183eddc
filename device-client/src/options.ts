/**
 * Checks of what an application passes to the device client, before anything is built or
 * scheduled: every mistake is INVALID_OPTIONS naming the option, never a raw TypeError later
 * (errors.ts: anything else that escapes is a bug). A NaN renewal fraction or backoff delay would
 * otherwise turn into setTimeout(NaN), which fires at once: renewals or reconnects in a tight loop.
 */
import type { BackoffOptions } from './backoff.js';
import { DeviceClientError } from './errors.js';
import { DEVICE_ID_RE } from './util.js';

function invalid(message: string, cause?: unknown): DeviceClientError {
  return new DeviceClientError('INVALID_OPTIONS', message, cause === undefined ? undefined : { cause });
}

/** A URL option, or INVALID_OPTIONS naming it. */
export function parseUrl(value: unknown, option: string): URL {
  try {
    if (typeof value !== 'string') throw new Error(`not a string: ${typeof value}`);
    return new URL(value);
  } catch (e) {
    throw invalid(`${option} must be a URL, got ${JSON.stringify(value) ?? String(value)}`, e);
  }
}

function checkNumber(value: unknown, option: string, min: number, max: number): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max)
    throw invalid(`${option} must be a number from ${min} to ${max}, got ${String(value)}`);
}

export function checkBackoff(b: BackoffOptions | undefined, option: string): void {
  if (b === undefined) return;
  if (typeof b !== 'object' || b === null) throw invalid(`${option} must be an object`);
  checkNumber(b.initialMs, `${option}.initialMs`, 0, 2 ** 31 - 1);
  checkNumber(b.maxMs, `${option}.maxMs`, 0, 2 ** 31 - 1);
  checkNumber(b.factor, `${option}.factor`, 1, 1_000);
  checkNumber(b.jitter, `${option}.jitter`, 0, 1);
}

/** The shape the client needs checked (DeviceClientOptions, without importing it back). */
interface CheckedOptions {
  deviceId: unknown;
  credentialDir: unknown;
  ca: unknown;
  estUrl: unknown;
  mqttUrl?: unknown;
  renewal?: { fraction?: unknown; retry?: BackoffOptions };
  reconnect?: BackoffOptions;
  mqtt?: { keepalive?: unknown; connectTimeoutMs?: unknown };
}

export function checkClientOptions(o: CheckedOptions): void {
  if (typeof o !== 'object' || o === null) throw invalid('options must be an object');
  if (typeof o.deviceId !== 'string' || !DEVICE_ID_RE.test(o.deviceId))
    throw invalid(`device id must match ${DEVICE_ID_RE}: ${String(o.deviceId)}`);
  if (typeof o.credentialDir !== 'string' || o.credentialDir === '' || o.credentialDir.includes('\0'))
    throw invalid(`credentialDir must be a directory path, got ${JSON.stringify(o.credentialDir) ?? 'nothing'}`);
  if (typeof o.ca !== 'string' && !Buffer.isBuffer(o.ca))
    throw invalid('ca must be the PEM CA bundle (string or Buffer)');
  parseUrl(o.estUrl, 'estUrl');
  if (o.mqttUrl !== undefined) parseUrl(o.mqttUrl, 'mqttUrl');
  // Strictly inside (0, 1): 0 would renew at once, 1 at expiry.
  const fraction = o.renewal?.fraction;
  if (fraction !== undefined && (typeof fraction !== 'number' || !(fraction > 0 && fraction < 1)))
    throw invalid(`renewal.fraction must be a number between 0 and 1 (exclusive), got ${String(fraction)}`);
  checkBackoff(o.renewal?.retry, 'renewal.retry');
  checkBackoff(o.reconnect, 'reconnect');
  checkNumber(o.mqtt?.keepalive, 'mqtt.keepalive', 0, 65_535);
  checkNumber(o.mqtt?.connectTimeoutMs, 'mqtt.connectTimeoutMs', 1, 2 ** 31 - 1);
}
