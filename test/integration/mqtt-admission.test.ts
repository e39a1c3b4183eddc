import { connect as tlsConnect } from 'node:tls';
import { generate, type IConnectPacket } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueServerCertificate } from '../../server/src/ca/profile.js';
import { loadConfig } from '../../server/src/config.js';
import { createLogger } from '../../server/src/log.js';
import { NULL_BROKER_OBSERVER, type RunningBroker, startBroker } from '../../server/src/mqtt/index.js';
import {
  type DeviceTls,
  enrolledTls,
  type Harness,
  OPERATOR,
  openHarness,
  pgliteBackend,
  tokenBackends,
} from '../helpers/provisioning.js';

/** One TLS connection that sends a CONNECT and resolves with the first bytes the broker answers. */
function connackOf(broker: RunningBroker, ca: string, dev: DeviceTls, connect: Partial<IConnectPacket>) {
  return new Promise<Buffer>((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: broker.port, ca, ...dev, servername: 'localhost' });
    const got: Buffer[] = [];
    socket.once('secureConnect', () => {
      socket.write(
        generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clean: true,
          keepalive: 30,
          ...connect,
        } as IConnectPacket),
      );
    });
    socket.on('data', (b: Buffer) => {
      got.push(b);
      if (Buffer.concat(got).length >= 4) socket.end();
    });
    socket.once('error', reject);
    socket.once('close', () => resolve(Buffer.concat(got)));
  });
}

// The broker's certificate and the devices' come from the CA with its key in a file, then in a token.
describe.each([pgliteBackend, ...tokenBackends()])('admission before aedes (in process, $name)', (backend) => {
  let h: Harness;
  let broker: RunningBroker;
  let revoked: DeviceTls;
  let good: DeviceTls;
  const clientEvents: string[] = [];

  beforeAll(async () => {
    h = await openHarness(backend);
    revoked = await enrolledTls(h, 'adm-revoked');
    good = await enrolledTls(h, 'adm-good');
    await h.revocation.revokeDevice('adm-revoked', 1, OPERATOR);
    const server = await issueServerCertificate(h.ca, {
      now: new Date(),
      dnsNames: ['localhost'],
      ipAddresses: [],
      validityDays: 1,
    });
    broker = await startBroker({
      host: '127.0.0.1',
      port: 0,
      tls: { keyPem: server.keyPem, chainPem: server.chainPem, caPem: h.ca.bundlePem },
      store: h.store,
      config: loadConfig({}).mqtt,
      observer: NULL_BROKER_OBSERVER,
      log: createLogger('silent'),
    });
    broker.aedes.on('client', (c) => clientEvents.push(c.id));
  });

  afterAll(async () => {
    await broker?.close();
    await h?.close();
  });

  it('answers a revoked device 50 times with CONNACK 0x05 and allocates no aedes client', async () => {
    for (let i = 0; i < 50; i++) {
      const answer = await connackOf(broker, h.ca.bundlePem, revoked, { clientId: 'adm-revoked' });
      expect(answer.toString('hex')).toBe('20020005');
    }
    // MQTT 5 gets MQTT 5's "not authorized".
    const v5 = await connackOf(broker, h.ca.bundlePem, revoked, { clientId: 'adm-revoked', protocolVersion: 5 });
    expect(v5.toString('hex')).toBe('2003008700');
    expect(clientEvents).toEqual([]);
    expect(broker.aedes.connectedClients).toBe(0);
    expect((broker.aedes as unknown as { clients: Record<string, unknown> }).clients).toEqual({});
  });

  it('also keeps refused CONNECTs of a valid device (wrong client id, MQTT 5) away from aedes', async () => {
    expect((await connackOf(broker, h.ca.bundlePem, good, { clientId: 'someone-else' })).toString('hex')).toBe(
      '20020005',
    );
    expect(
      (await connackOf(broker, h.ca.bundlePem, good, { clientId: 'someone-else', protocolVersion: 5 })).toString('hex'),
    ).toBe('2003008500');
    expect(clientEvents).toEqual([]);
  });

  it('hands an admitted CONNECT to aedes (the probe above can see a client)', async () => {
    const answer = await connackOf(broker, h.ca.bundlePem, good, { clientId: 'adm-good' });
    expect(answer.subarray(0, 4).toString('hex')).toBe('20020000');
    expect(clientEvents).toEqual(['adm-good']);
  });
});
