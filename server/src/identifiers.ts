/**
 * The grammars of the identifiers in fleetgate's public contract, in one place: the API's JSON
 * schemas, the configuration, the CA profile and the broker all take them from here (the device
 * client keeps its own copy of the device-id rule, tested against the same cases:
 * test/helpers/identifier-cases.ts).
 */

/**
 * A device id, and equally a service name: 1-64 characters, letters, digits, '.', '_', '-', not
 * starting with a punctuation mark. It is written unescaped into a URN (RFC 8141 NSS), an
 * X.509 CN and SAN URI, an MQTT topic level and an HTTP Basic user-id (RFC 7617 forbids ':'),
 * so it never holds '/', ':', '+', '#', '%' or whitespace, and a leading '.' or '-' cannot read
 * as a path or an option.
 */
export const DEVICE_ID_SOURCE = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
export const DEVICE_ID_PATTERN = new RegExp(DEVICE_ID_SOURCE);

export function isValidDeviceId(id: unknown): id is string {
  return typeof id === 'string' && DEVICE_ID_PATTERN.test(id);
}

/** Service names share the device-id grammar: both become `urn:fleetgate:<kind>:<id>` and topic levels. */
export const SERVICE_NAME_SOURCE = DEVICE_ID_SOURCE;
export const SERVICE_NAME_PATTERN = DEVICE_ID_PATTERN;

/** Operator names too: they are printed in audit records and CLI tables next to device ids. */
export const OPERATOR_NAME_SOURCE = DEVICE_ID_SOURCE;

/**
 * The prefix of a factory batch of tokens (at most 10,000): a device id once the zero-padded
 * number of up to 5 digits is appended (59 + 5 = 64 characters at most).
 */
export const DEVICE_ID_PREFIX_SOURCE = '^[A-Za-z0-9][A-Za-z0-9._-]{0,58}$';

export const deviceUri = (id: string): string => `urn:fleetgate:device:${id}`;
export const serviceUri = (name: string): string => `urn:fleetgate:service:${name}`;

/**
 * A certificate serial as fleetgate stores and compares it: lower-case hex of the INTEGER's
 * content octets, 1 to 20 octets (RFC 5280 section 4.1.2.2 caps serials at 20 octets).
 */
export const SERIAL_HEX_PATTERN = /^[0-9a-f]{2,40}$/;

/** A stored serial: SERIAL_HEX_PATTERN, whole octets, and positive (never all zero). */
export function isSerialHex(value: string): boolean {
  return SERIAL_HEX_PATTERN.test(value) && value.length % 2 === 0 && !/^(00)+$/.test(value);
}

/** A serial as an operator types it into the API (any case; lower-cased before use). */
export const SERIAL_INPUT_SOURCE = '^[0-9a-fA-F]{1,40}$';
