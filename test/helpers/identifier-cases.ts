/**
 * The cases every copy of an identifier grammar must agree on: the server's (identifiers.ts, used
 * by the API schemas, config and broker) and the device client's own copy of the device-id rule.
 */

export const VALID_DEVICE_IDS: readonly string[] = [
  'a',
  'Z',
  '0',
  'sensor-001',
  'Sensor_001.eu',
  'a.b-c_d',
  '9-lives',
  'x'.repeat(64),
  `A${'-'.repeat(63)}`,
];

export const INVALID_DEVICE_IDS: readonly string[] = [
  '',
  'x'.repeat(65),
  '-sensor',
  '.hidden',
  '_under',
  'a/b',
  'a+b',
  'a#',
  'a:b',
  'a b',
  ' a',
  'a\n',
  'a\0',
  'dev%41',
  'caf\u00e9',
  'a\u200bb',
  '*',
  '../etc',
  'urn:fleetgate:device:x',
];

export const VALID_SERIALS: readonly string[] = ['01', '7f', '4a0b', 'ab'.repeat(20), `00${'ff'.repeat(19)}`];

export const INVALID_SERIALS: readonly string[] = [
  '',
  '1',
  'abc',
  '00',
  '0000',
  'AB',
  'ab'.repeat(21),
  'zz',
  '-01',
  '0x01',
  'ab:cd',
];
