/**
 * MQTT 5.0 at the broker (issue 20): the same rules as 3.1.1 (identity binding, ACL, revocation
 * on every connect and of live connections, takeover), each said with its 5.0 reason code
 * (server/src/mqtt/reason-codes.ts), and the CONNACK properties that advertise the broker's real
 * limits. Seen by three independent clients: MQTT.js with protocolVersion 5, the stock
 * mosquitto_pub / mosquitto_sub -V mqttv5, and Debian's python3-paho-mqtt with MQTTv5.
 */
import { spawn } from 'node:child_process';
import mqtt, { type IDisconnectPacket, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Credential,
  connectOutcome,
  createService,
  enrollDevices,
  type Fleet,
  issueShortLived,
  type MqttExtra,
  metricsText,
  metricValue,
  mqttOptions,
  revokeDevice,
  startFleet,
} from '../helpers/device.js';
import { runToEnd as run } from '../helpers/run-command.js';
import { requireTool } from '../helpers/system-tools.js';
import { waitFor } from '../helpers/wait.js';

const V5: MqttExtra = { protocolVersion: 5 };
const PYTHON = '/usr/bin/python3';

/** The DISCONNECT the broker sent (if any) and the close that follows it, in that order. */
function serverGoodbye(client: MqttClient): Promise<{ reasonCode: number | undefined; beforeClose: boolean }> {
  return new Promise((resolve) => {
    let disconnect: IDisconnectPacket | null = null;
    client.once('disconnect', (p) => {
      disconnect = p;
    });
    client.once('close', () => resolve({ reasonCode: disconnect?.reasonCode, beforeClose: disconnect !== null }));
  });
}

describe('MQTT 5.0 at the broker', () => {
  let fleet: Fleet;
  let devs: Record<string, Credential>;
  const dev = (id: string) => devs[id] as Credential;

  beforeAll(async () => {
    fleet = await startFleet();
    devs = await enrollDevices(fleet, [
      'v5-a',
      'v5-b',
      'v5-rev',
      'v5-take',
      'v5-py',
      'v5-mos',
      'v5-will',
      'v5-willrev',
    ]);
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  it('admits a 5.0 client and advertises the real limits in CONNACK', async () => {
    const c = await mqtt.connectAsync(mqttOptions(fleet, dev('v5-a'), V5));
    const props = (c as unknown as { _serverProperties?: Record<string, unknown> })._serverProperties;
    // FLEETGATE_MQTT_MAX_PACKET_SIZE (remaining length, default 131,072) as a whole packet size:
    // plus the fixed header byte and 3 bytes of remaining length.
    expect(props).toMatchObject({ sharedSubscriptionAvailable: false, receiveMaximum: 1000 });
    expect(props?.maximumPacketSize).toBe(1 + 3 + 131_072);
    // Absent means: topic aliases 0, maximum QoS 2, retain and wildcards available (3.2.2.3).
    expect(props).not.toHaveProperty('topicAliasMaximum');
    expect(props).not.toHaveProperty('maximumQoS');
    await c.publishAsync('devices/v5-a/telemetry', 'in bounds', { qos: 1 });
    await c.endAsync();
  });

  it('refuses a client id that is not the certificate identity with 0x85, a user name with 0x87', async () => {
    expect(await connectOutcome(fleet, dev('v5-a'), { ...V5, clientId: 'v5-b' })).toBe(0x85);
    expect(await connectOutcome(fleet, dev('v5-a'), { ...V5, clientId: 'v5-a', username: 'v5-b' })).toBe(0x87);
    // The same refusals in 3.1.1 are unchanged (0x05).
    expect(await connectOutcome(fleet, dev('v5-a'), { clientId: 'v5-b' })).toBe(0x05);
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_refused_total', { reason: 'id_mismatch' })).toBeGreaterThanOrEqual(3);
  });

  it('answers an out-of-bounds PUBLISH with PUBACK/PUBREC 0x87 and a refused filter with SUBACK 0x87', async () => {
    const a = await mqtt.connectAsync(mqttOptions(fleet, dev('v5-a'), V5));
    const b = await mqtt.connectAsync(mqttOptions(fleet, dev('v5-b'), V5));
    const seen: string[] = [];
    b.on('message', (t) => seen.push(t));
    await b.subscribeAsync('devices/v5-b/#', { qos: 1 });
    await expect(a.publishAsync('devices/v5-b/telemetry', 'not mine', { qos: 1 })).rejects.toMatchObject({
      code: 0x87,
    });
    await expect(a.publishAsync('devices/v5-b/telemetry', 'not mine', { qos: 2 })).rejects.toMatchObject({
      code: 0x87,
    });
    // MQTT.js fails the whole SUBSCRIBE when any filter is refused; the SUBACK is on the error.
    const suback = await a
      .subscribeAsync(['devices/v5-a/commands/#', 'devices/v5-b/#', '$share/g/devices/v5-a/x'])
      .then(
        () => null,
        (e: { packet?: { granted?: number[] } }) => e.packet?.granted,
      );
    expect(suback).toEqual([0, 0x87, 0x9e]);
    // The connection goes on, and nothing of the refused publishes reached the other device.
    await b.publishAsync('devices/v5-b/telemetry', 'own', { qos: 1 });
    await waitFor('own publish delivered', () => (seen.length > 0 ? true : undefined));
    expect(seen).toEqual(['devices/v5-b/telemetry']);
    expect(a.connected).toBe(true);
    await a.endAsync();
    await b.endAsync();
  });

  it('sends DISCONNECT 0x98 to a revoked live 5.0 connection before the socket closes; later CONNACK 0x87', async () => {
    const c = await mqtt.connectAsync(mqttOptions(fleet, dev('v5-rev'), V5));
    const bye = serverGoodbye(c);
    await revokeDevice(fleet, 'v5-rev');
    expect(await bye).toEqual({ reasonCode: 0x98, beforeClose: true });
    c.end(true);
    expect(await connectOutcome(fleet, dev('v5-rev'), V5)).toBe(0x87);
  });

  it('sends DISCONNECT 0x98 to a live 5.0 connection when its certificate reaches notAfter', async () => {
    const short = await issueShortLived(fleet, 'v5-expiring', 4_000);
    const c = await mqtt.connectAsync(mqttOptions(fleet, short, V5));
    // The broker's sweep of live connections runs every FLEETGATE_MQTT_PRESENCE_FLUSH (10 s).
    expect(await serverGoodbye(c)).toEqual({ reasonCode: 0x98, beforeClose: true });
    c.end(true);
  });

  it('sends DISCONNECT 0x8E to the connection a newer one takes over', async () => {
    const first = await mqtt.connectAsync(mqttOptions(fleet, dev('v5-take'), V5));
    const bye = serverGoodbye(first);
    const second = await mqtt.connectAsync(mqttOptions(fleet, dev('v5-take'), V5));
    expect(await bye).toEqual({ reasonCode: 0x8e, beforeClose: true });
    first.end(true);
    await second.endAsync();
  });

  it('caps the Session Expiry Interval at the certificate notAfter and says so in CONNACK', async () => {
    const short = await issueShortLived(fleet, 'v5-short', 120_000);
    const c = await mqtt.connectAsync(
      mqttOptions(fleet, short, { ...V5, clean: false, properties: { sessionExpiryInterval: 0xffffffff } }),
    );
    const props = (c as unknown as { _serverProperties?: Record<string, number> })._serverProperties;
    expect(props?.sessionExpiryInterval).toBeGreaterThan(0);
    expect(props?.sessionExpiryInterval).toBeLessThanOrEqual(120);
    await c.endAsync();
  });

  it("publishes a delayed will of a live certificate, never the revoked device's", async () => {
    const watcher = await createService(fleet, 'v5watch');
    const seen: string[] = [];
    const sub = await mqtt.connectAsync(mqttOptions(fleet, watcher, { ...V5, clientId: 'v5watch' }));
    sub.on('message', (topic) => seen.push(topic));
    await sub.subscribeAsync('devices/+/status', { qos: 1 });
    const withWill = (id: string): MqttExtra => ({
      ...V5,
      properties: { sessionExpiryInterval: 60 },
      will: {
        topic: `devices/${id}/status`,
        payload: Buffer.from('gone'),
        qos: 1,
        retain: false,
        properties: { willDelayInterval: 1 },
      },
    });
    const revoked = await mqtt.connectAsync(mqttOptions(fleet, dev('v5-willrev'), withWill('v5-willrev')));
    const live = await mqtt.connectAsync(mqttOptions(fleet, dev('v5-will'), withWill('v5-will')));
    // The revoked device's connection ends first, so its will (same delay) is due first.
    const bye = serverGoodbye(revoked);
    await revokeDevice(fleet, 'v5-willrev');
    expect((await bye).reasonCode).toBe(0x98);
    revoked.end(true);
    // A lost connection (no DISCONNECT): the will is due after its delay.
    (live as unknown as { stream: { destroy(): void } }).stream.destroy();
    live.end(true);
    await waitFor('the live device will', () => (seen.includes('devices/v5-will/status') ? true : undefined));
    expect(seen).toEqual(['devices/v5-will/status']);
    await sub.endAsync();
  });

  it.runIf(requireTool('mosquitto_sub'))('mosquitto_pub/_sub -V mqttv5 see each refusal by its reason', async () => {
    const cred = dev('v5-mos');
    const base = (id: string) => [
      ...['-h', fleet.host, '-p', String(fleet.mqttPort), '--cafile', cred.caFile],
      ...['--cert', cred.certFile, '--key', cred.keyFile, '-i', id, '-V', 'mqttv5'],
    ];
    const ok = await run('mosquitto_pub', [...base('v5-mos'), '-q', '1', '-t', 'devices/v5-mos/telemetry', '-m', 'x']);
    expect(ok, ok.out).toMatchObject({ code: 0 });
    const badId = await run('mosquitto_sub', [...base('v5-other'), '-t', 'devices/v5-mos/#', '-C', '1']);
    expect(badId.code, badId.out).not.toBe(0);
    expect(badId.out).toMatch(/Client identifier not valid/i);
    const outOfBounds = await run('mosquitto_pub', [...base('v5-mos'), '-q', '1', '-t', 'devices/v5-a/x', '-m', 'x']);
    expect(outOfBounds.out).toMatch(/not authori[sz]ed/i);
    const sub = await run('mosquitto_sub', [...base('v5-mos'), '-t', 'devices/v5-a/#', '-C', '1', '-W', '5']);
    expect(sub.out).toMatch(/not authori[sz]ed|denied/i);
  });

  it.runIf(requireTool(PYTHON))(
    'paho-mqtt MQTTv5 sees 0x85, PUBACK 0x87, SUBACK 0x87 and DISCONNECT 0x98',
    async () => {
      const cred = dev('v5-py');
      const script = `
import ssl, sys, threading, json
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
host, port, ca, cert, key, cid, mode = sys.argv[1:8]
out = {}
done = threading.Event()
connected = threading.Event()
c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
c.tls_insecure_set(True)
def on_connect(cl, u, flags, rc, props=None):
    out['connack'] = rc.value
    if rc.value != 0:
        done.set()
    else:
        connected.set()
def on_publish(cl, u, mid):
    pass
def on_subscribe(cl, u, mid, rcs, props=None):
    out['suback'] = [r.value for r in rcs]
    done.set()
def on_disconnect(cl, u, rc, props=None):
    out['disconnect'] = rc.value if hasattr(rc, 'value') else rc
    done.set()
c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.on_disconnect = on_disconnect
# paho 1.6 hides the PUBACK reason code: read it from the packet handler
orig = c._handle_pubackcomp
def pubackcomp(cmd):
    import struct
    pkt = c._in_packet['packet']
    out.setdefault('puback', []).append(pkt[2] if len(pkt) > 2 else 0)
    return orig(cmd)
c._handle_pubackcomp = pubackcomp
c.connect(host, int(port))
c.loop_start()
if mode == 'connect':
    done.wait(15)
elif mode == 'acl':
    connected.wait(15)
    c.publish('devices/elsewhere/x', b'x', qos=1).wait_for_publish(15)
    c.subscribe('devices/elsewhere/#', qos=1)
    done.wait(15)
elif mode == 'revoked':
    connected.wait(15)
    print('READY', flush=True)
    done.wait(30)
c.loop_stop()
print(json.dumps(out), flush=True)
`;
      const py = (cid: string, mode: string) => {
        const child = spawn(
          PYTHON,
          ['-c', script, fleet.host, String(fleet.mqttPort), cred.caFile, cred.certFile, cred.keyFile, cid, mode],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d;
        });
        child.stderr.on('data', (d: Buffer) => {
          out += d;
        });
        const timer = setTimeout(() => child.kill('SIGKILL'), 40_000);
        const ended = new Promise<Record<string, unknown>>((resolve, reject) =>
          child.on('close', () => {
            clearTimeout(timer);
            const line = out.trim().split('\n').at(-1) ?? '';
            try {
              resolve(JSON.parse(line) as Record<string, unknown>);
            } catch {
              reject(new Error(`paho run ended without a result:\n${out}`));
            }
          }),
        );
        const ready = new Promise<void>((resolve) => child.stdout.on('data', () => out.includes('READY') && resolve()));
        return { ended, ready };
      };
      expect(await py('someone-else', 'connect').ended).toMatchObject({ connack: 0x85 });
      expect(await py('v5-py', 'acl').ended).toMatchObject({ connack: 0, puback: [0x87], suback: [0x87] });
      const live = py('v5-py', 'revoked');
      await live.ready;
      await revokeDevice(fleet, 'v5-py');
      expect(await live.ended).toMatchObject({ connack: 0, disconnect: 0x98 });
    },
  );
});
