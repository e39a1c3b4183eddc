/**
 * One grammar per identifier: the server module, the API's JSON-schema pattern built from it, the
 * configuration's service names and the device client's own copy all accept and refuse the same
 * cases (test/helpers/identifier-cases.ts).
 */
import { describe, expect, it } from 'vitest';
import { DEVICE_ID_RE } from '../../device-client/src/util.js';
import { loadConfig } from '../../server/src/config.js';
import {
  DEVICE_ID_PREFIX_SOURCE,
  DEVICE_ID_SOURCE,
  isSerialHex,
  isValidDeviceId,
  SERIAL_HEX_PATTERN,
  SERIAL_INPUT_SOURCE,
  SERVICE_NAME_SOURCE,
} from '../../server/src/identifiers.js';
import { INVALID_DEVICE_IDS, INVALID_SERIALS, VALID_DEVICE_IDS, VALID_SERIALS } from '../helpers/identifier-cases.js';

const acceptsServiceName = (name: string): boolean => {
  try {
    loadConfig({ FLEETGATE_MQTT_SERVICE_ACL: JSON.stringify({ [name]: { subscribe: [] } }) });
    return true;
  } catch {
    return false;
  }
};

describe('device-id grammar', () => {
  const copies: [string, (id: string) => boolean][] = [
    ['server isValidDeviceId', (id) => isValidDeviceId(id)],
    ['API schema pattern', (id) => new RegExp(DEVICE_ID_SOURCE).test(id)],
    ['service names', (id) => new RegExp(SERVICE_NAME_SOURCE).test(id)],
    ['config service ACL', acceptsServiceName],
    ['device client', (id) => DEVICE_ID_RE.test(id)],
  ];

  it.each(copies)('%s accepts every valid id', (_name, accepts) => {
    for (const id of VALID_DEVICE_IDS) expect(accepts(id), JSON.stringify(id)).toBe(true);
  });

  it.each(copies)('%s refuses every invalid id', (_name, accepts) => {
    // The config's service ACL also accepts '*' (the default entry), which is not a name.
    for (const id of INVALID_DEVICE_IDS.filter((i) => i !== '*' || _name !== 'config service ACL')) {
      expect(accepts(id), JSON.stringify(id)).toBe(false);
    }
  });

  it('device client copy is the server rule, character for character', () => {
    expect(DEVICE_ID_RE.source).toBe(DEVICE_ID_SOURCE);
  });

  it('a batch prefix plus a 5-digit number is still a device id', () => {
    const prefix = new RegExp(DEVICE_ID_PREFIX_SOURCE);
    const longest = 'p'.repeat(59);
    expect(prefix.test(longest)).toBe(true);
    expect(isValidDeviceId(`${longest}10000`)).toBe(true);
    expect(prefix.test(`${longest}p`)).toBe(false);
  });
});

describe('serial grammar', () => {
  it('accepts stored serials', () => {
    for (const s of VALID_SERIALS) expect(isSerialHex(s), s).toBe(true);
  });

  it('refuses anything else', () => {
    for (const s of INVALID_SERIALS) expect(isSerialHex(s), JSON.stringify(s)).toBe(false);
  });

  it('operator input is wider (any case, odd length) and lower-cases into the stored pattern', () => {
    const input = new RegExp(SERIAL_INPUT_SOURCE);
    for (const s of VALID_SERIALS) expect(input.test(s.toUpperCase())).toBe(true);
    expect(SERIAL_HEX_PATTERN.test('AB'.toLowerCase())).toBe(true);
    for (const s of ['', 'zz', 'ab'.repeat(21), '0x01', 'ab:cd']) expect(input.test(s), s).toBe(false);
  });
});
