/**
 * FLEETGATE_CA_KEY_URI: RFC 7512 pkcs11: URIs, parsed strictly (server/src/hsm/pkcs11-uri.ts),
 * and the configuration that carries them (CONFIG_INVALID naming the variable, never the PIN).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { loadConfig } from '../../server/src/config.js';
import { formatPkcs11Uri, parsePkcs11Uri } from '../../server/src/hsm/pkcs11-uri.js';
import { tempDir } from '../helpers/cli.js';

describe('RFC 7512 URIs that name a token and a key', () => {
  test.each([
    ['pkcs11:token=fleetgate;object=issuing-ca', { token: 'fleetgate', object: 'issuing-ca' }],
    // Section 2.3: attribute names are case-insensitive here only because the scheme is; values are not.
    [
      'PKCS11:token=Fleet%20Gate;object=ca%3Bkey;type=private',
      { token: 'Fleet Gate', object: 'ca;key', type: 'private' },
    ],
    ['pkcs11:serial=0123abcd;id=%01%02%ff', { serial: '0123abcd', id: new Uint8Array([1, 2, 255]) }],
    ['pkcs11:slot-id=42;object=k', { slotId: 42, object: 'k' }],
    // UTF-8 label, percent-encoded (section 2.3: values are UTF-8).
    ['pkcs11:token=%C3%A9quipe;object=k', { token: 'équipe', object: 'k' }],
    [
      'pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;token=t;object=k',
      {
        model: 'SoftHSM v2',
        manufacturer: 'SoftHSM project',
        token: 't',
        object: 'k',
      },
    ],
  ])('%s', (uri, expected) => {
    expect(parsePkcs11Uri(uri)).toEqual(expected);
  });

  test('format gives back a URI that parses to the same thing', () => {
    for (const uri of ['pkcs11:token=Fleet%20Gate;object=ca%3Bkey;type=private', 'pkcs11:serial=1;id=%00%ff']) {
      const parsed = parsePkcs11Uri(uri);
      expect(parsePkcs11Uri(formatPkcs11Uri(parsed))).toEqual(parsed);
    }
  });
});

describe('hostile and broken URIs are refused with a message that never repeats a secret', () => {
  test.each([
    ['', /must start with pkcs11:/],
    ['https://hsm.example/token', /must start with pkcs11:/],
    ['pkcs11:', /must name the token/],
    ['pkcs11:token=t', /must name the key/],
    ['pkcs11:object=k', /must name the token/],
    [
      'pkcs11:token=t;object=k?pin-value=1234',
      /pin-value is refused: the PIN comes only from FLEETGATE_PKCS11_PIN_FILE/,
    ],
    ['pkcs11:token=t;object=k?PIN-SOURCE=file:/etc/shadow', /pin-source is refused/],
    [
      'pkcs11:token=t;object=k?module-path=/tmp/evil.so',
      /module-path is refused: the module is FLEETGATE_PKCS11_MODULE/,
    ],
    ['pkcs11:token=t;object=k?module-name=evil', /module-name is refused/],
    ['pkcs11:token=t;object=k?x=1', /unknown query attribute "x"/],
    ['pkcs11:token=t;object=k;token=u', /"token" appears twice/],
    ['pkcs11:token=t;object=k;Object=j', /"object" appears twice/],
    ['pkcs11:token=t;object=k;x-vendor=1', /unknown path attribute "x-vendor"/],
    ['pkcs11:token=t;object=k;type=cert', /type must be private/],
    ['pkcs11:token=t;object', /is not name=value/],
    ['pkcs11:token=t;=k', /is not name=value/],
    ['pkcs11:token=t;object=k%', /invalid character or percent-encoding/],
    ['pkcs11:token=t;object=k%zz', /invalid character or percent-encoding/],
    ['pkcs11:token=t;object=a b', /invalid character or percent-encoding/],
    ['pkcs11:token=t;object=a/b', /invalid character or percent-encoding/],
    ['pkcs11:token=t;object=k#frag', /fragment/],
    ['pkcs11:token=t%00x;object=k', /control or format characters/],
    ['pkcs11:token=t;object=%0a', /control or format characters/],
    ['pkcs11:token=t;object=%e2%80%ae', /control or format characters/], // U+202E RIGHT-TO-LEFT OVERRIDE
    ['pkcs11:token=%ff%fe;object=k', /is not UTF-8/],
    ['pkcs11:token=;object=k', /token is empty/],
    ['pkcs11:token=t;id=', /id is empty/],
    [`pkcs11:token=${'a'.repeat(33)};object=k`, /longer than the 32 bytes/],
    [`pkcs11:serial=${'1'.repeat(17)};object=k`, /longer than the 16 bytes/],
    ['pkcs11:slot-id=-1;object=k', /slot-id must be a decimal number/],
    ['pkcs11:slot-id=4294967296;object=k', /slot-id must be a decimal number/],
    [`pkcs11:token=t;object=${'k'.repeat(3000)}`, /longer than 2048 characters/],
  ])('%j', (uri, message) => {
    expect(() => parsePkcs11Uri(uri)).toThrow(message);
    try {
      parsePkcs11Uri(uri);
    } catch (e) {
      expect((e as Error).message).not.toContain('1234');
      expect((e as Error).message).not.toContain('/etc/shadow');
    }
  });
});

describe('configuration', () => {
  const dir = tempDir('fg-pkcs11-config-');
  const pinFile = path.join(dir, 'pin');
  writeFileSync(pinFile, '1234\n', { mode: 0o600 });
  const base = { FLEETGATE_DATA_DIR: dir };

  test('unset: the key is a file', () => {
    expect(loadConfig(base).caKey).toEqual({ kind: 'file' });
  });

  test('URI, module and PIN file together', () => {
    const config = loadConfig({
      ...base,
      FLEETGATE_CA_KEY_URI: 'pkcs11:token=fleetgate;object=issuing',
      FLEETGATE_PKCS11_MODULE: '/usr/lib/softhsm/libsofthsm2.so',
      FLEETGATE_PKCS11_PIN_FILE: pinFile,
    });
    expect(config.caKey).toEqual({
      kind: 'pkcs11',
      uri: { token: 'fleetgate', object: 'issuing' },
      module: '/usr/lib/softhsm/libsofthsm2.so',
      pinFile,
    });
    // The PIN is read when the token is opened, so it is not in the configuration object.
    expect(JSON.stringify(config)).not.toContain('1234');
  });

  test.each([
    [{ FLEETGATE_CA_KEY_URI: 'pkcs11:token=t;object=k' }, /FLEETGATE_CA_KEY_URI needs FLEETGATE_PKCS11_MODULE/],
    [
      { FLEETGATE_CA_KEY_URI: 'pkcs11:token=t;object=k', FLEETGATE_PKCS11_MODULE: '/m.so' },
      /FLEETGATE_CA_KEY_URI needs FLEETGATE_PKCS11_PIN_FILE/,
    ],
    [{ FLEETGATE_PKCS11_MODULE: '/m.so' }, /FLEETGATE_PKCS11_MODULE is set but FLEETGATE_CA_KEY_URI is not/],
    [{ FLEETGATE_PKCS11_PIN_FILE: '/pin' }, /FLEETGATE_PKCS11_PIN_FILE is set but FLEETGATE_CA_KEY_URI is not/],
    [{ FLEETGATE_CA_KEY_URI: 'pkcs11:token=t;object=k?pin-value=1234' }, /FLEETGATE_CA_KEY_URI pin-value is refused/],
    [{ FLEETGATE_CA_KEY_URI: 'file:///ca.key' }, /FLEETGATE_CA_KEY_URI must start with pkcs11:/],
    [{ FLEETGATE_PKCS11_MODULE: 'relative/module.so' }, /FLEETGATE_PKCS11_MODULE must be an absolute path/],
    [{ FLEETGATE_PKCS11_MODULE: '/a\0b.so' }, /FLEETGATE_PKCS11_MODULE must be an absolute path/],
  ])('%j', (env, message) => {
    expect(() => loadConfig({ ...base, ...env })).toThrow(message);
    try {
      loadConfig({ ...base, ...env });
    } catch (e) {
      expect((e as Error).message).not.toContain('1234');
    }
  });
});
