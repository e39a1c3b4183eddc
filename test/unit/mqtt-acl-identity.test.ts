/**
 * The broker's pure decisions, without TLS or sockets: topic filter containment and matching
 * (acl.ts, MQTT 3.1.1 4.7) and identity from a peer certificate's fields (identity.ts). The CONNECT
 * admission is in mqtt-admission.test.ts.
 */
import type { PeerCertificate } from 'node:tls';
import { describe, expect, it } from 'vitest';
import {
  filterWithin,
  mayPublish,
  mayReceive,
  maySubscribe,
  rightsFor,
  topicMatches,
} from '../../server/src/mqtt/acl.js';
import { clientIdAllowed, identityOf } from '../../server/src/mqtt/identity.js';
import type { Identity } from '../../server/src/mqtt/types.js';

const sp = (s: string) => s.split('/');
const config = { readonlyTopics: ['fleet/broadcast/#'], serviceAcl: {} };

describe('acl', () => {
  it('matches topics against filters, # covering its parent level [MQTT-4.7.1-2]', () => {
    expect(topicMatches(sp('devices/a/t'), sp('devices/+/t'))).toBe(true);
    expect(topicMatches(sp('devices/a'), sp('devices/a/#'))).toBe(true);
    expect(topicMatches(sp('devices/a/b/c'), sp('devices/a/#'))).toBe(true);
    expect(topicMatches(sp('devices/a/b'), sp('devices/+'))).toBe(false);
    expect(topicMatches(sp('devices'), sp('devices/+'))).toBe(false);
    expect(topicMatches(sp('devices/a/'), sp('devices/a/+'))).toBe(true); // an empty level is a level
  });

  it('grants a filter only when everything it can match is inside (containment, not overlap)', () => {
    const own = sp('devices/a/#');
    expect(filterWithin(sp('devices/a/+/x'), own)).toBe(true);
    expect(filterWithin(sp('devices/a/#'), own)).toBe(true);
    expect(filterWithin(sp('devices/+/t'), own)).toBe(false);
    expect(filterWithin(sp('#'), own)).toBe(false);
    expect(filterWithin(sp('devices/#'), own)).toBe(false);
    expect(filterWithin(sp('devices/+/t'), sp('devices/+/t'))).toBe(true);
    expect(filterWithin(sp('devices/a/t'), sp('devices/+/t'))).toBe(true);
    expect(filterWithin(sp('devices/a/#'), sp('devices/+/t'))).toBe(false);
  });

  it("confines a device to its subtree plus the read-only topics, and never grants '$'", () => {
    const r = rightsFor({ kind: 'device', id: 'a' }, config);
    expect(maySubscribe(r, 'devices/a/#')).toBe(true);
    expect(maySubscribe(r, 'fleet/broadcast/fw')).toBe(true);
    expect(maySubscribe(r, 'devices/b/#')).toBe(false);
    expect(maySubscribe(r, '$SYS/#')).toBe(false);
    expect(mayPublish(r, 'devices/a/t')).toBe(true);
    expect(mayPublish(r, 'fleet/broadcast/fw')).toBe(false);
    expect(mayPublish(r, 'devices/a/+')).toBe(false);
    expect(mayPublish(r, 'devices/a/\0')).toBe(false);
  });

  it('lets a message reach a client only inside a filter it may subscribe to (queued deliveries)', () => {
    const svc = rightsFor(
      { kind: 'service', id: 'ingest' },
      {
        readonlyTopics: [],
        serviceAcl: { ingest: { subscribe: ['devices/+/state'], publish: [] } },
      },
    );
    expect(mayReceive(svc, 'devices/a/state')).toBe(true);
    expect(mayReceive(svc, 'devices/a/telemetry')).toBe(false);
    expect(mayReceive(svc, '$SYS/x/new/clients')).toBe(false);
  });
});

const cert = (fields: Partial<PeerCertificate>): PeerCertificate =>
  ({ serialNumber: '00AB12', valid_to: 'Jan  1 00:00:00 2099 GMT', subject: {}, ...fields }) as PeerCertificate;

describe('identity', () => {
  it('reads the SAN URI, canonical serial and notAfter (and no raw certificate: unattested)', () => {
    const r = identityOf(cert({ subject: { CN: 'dev-1' } as never, subjectaltname: 'URI:urn:fleetgate:device:dev-1' }));
    expect(r).toEqual({
      ok: true,
      identity: {
        kind: 'device',
        id: 'dev-1',
        serial: 'ab12',
        notAfter: Date.UTC(2099, 0, 1),
        keyAssurance: 'unattested',
      },
    });
    const s = identityOf(cert({ subjectaltname: 'DNS:x, URI:urn:fleetgate:service:ingest' }));
    expect(s.ok && s.identity.kind).toBe('service');
  });

  it('refuses a CN that disagrees, two fleetgate URIs, a bad id, no serial', () => {
    const bad = [
      cert({ subject: { CN: 'other' } as never, subjectaltname: 'URI:urn:fleetgate:device:dev-1' }),
      cert({ subjectaltname: 'URI:urn:fleetgate:device:a, URI:urn:fleetgate:service:b' }),
      cert({ subjectaltname: 'URI:urn:fleetgate:device:a/#' }),
      cert({}),
    ];
    for (const c of bad) expect(identityOf(c)).toMatchObject({ ok: false, reason: 'no_identity' });
    expect(identityOf(cert({ serialNumber: '', subjectaltname: 'URI:urn:fleetgate:device:a' }))).toMatchObject({
      ok: false,
      reason: 'invalid_cert',
    });
  });

  it('binds client ids: the device id; a service NAME or NAME-<suffix>', () => {
    const dev: Identity = { kind: 'device', id: 'a', serial: '01', notAfter: 0 };
    const svc: Identity = { kind: 'service', id: 'ingest', serial: '02', notAfter: 0 };
    expect(clientIdAllowed(dev, 'a')).toBe(true);
    expect(clientIdAllowed(dev, 'a-1')).toBe(false);
    expect(clientIdAllowed(svc, 'ingest-1')).toBe(true);
    expect(clientIdAllowed(svc, 'ingest-')).toBe(false);
    expect(clientIdAllowed(svc, 'ingest-a/b')).toBe(false);
  });
});
