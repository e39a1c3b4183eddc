/**
 * The broker's per-connect and per-message counts are plain numbers read at scrape time
 * (server/src/metrics.ts, scrapedCounter): the exposition must carry the same families, labels,
 * types and values as prom-client's labelled calls did, across scrapes.
 */
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../server/src/metrics.js';

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('broker metrics read at scrape time', () => {
  it('exposes counts, zero series and the connected gauge with their usual names and types', async () => {
    const m = createMetrics({ certsExpiringSoon: async () => 0 });
    let text = await m.registry.metrics();
    expect(text).toContain('# TYPE fleetgate_mqtt_handshakes_total counter');
    expect(text).toContain('# TYPE fleetgate_mqtt_connected gauge');
    expect(sample(text, 'fleetgate_mqtt_handshakes_total{kind="full"}')).toBe(0);
    expect(sample(text, 'fleetgate_mqtt_handshakes_total{kind="resumed"}')).toBe(0);
    expect(sample(text, 'fleetgate_mqtt_connected{kind="device"}')).toBe(0);
    // A reason never counted has no series.
    expect(text).not.toContain('fleetgate_mqtt_refused_total{');

    m.broker.handshake('full');
    m.broker.handshake('full');
    m.broker.handshake('resumed');
    m.broker.refused('revoked');
    m.broker.connected('device', 1);
    m.broker.connected('device', 1);
    m.broker.connected('device', -1);
    m.broker.disconnected('client');
    m.broker.messages('in', 5);
    m.broker.messages('out', 3);
    text = await m.registry.metrics();
    expect(sample(text, 'fleetgate_mqtt_handshakes_total{kind="full"}')).toBe(2);
    expect(sample(text, 'fleetgate_mqtt_handshakes_total{kind="resumed"}')).toBe(1);
    expect(sample(text, 'fleetgate_mqtt_refused_total{reason="revoked"}')).toBe(1);
    expect(sample(text, 'fleetgate_mqtt_connected{kind="device"}')).toBe(1);
    expect(sample(text, 'fleetgate_mqtt_disconnects_total{cause="client"}')).toBe(1);
    expect(sample(text, 'fleetgate_mqtt_messages_total{direction="in"}')).toBe(5);
    expect(sample(text, 'fleetgate_mqtt_messages_total{direction="out"}')).toBe(3);

    // A second scrape neither doubles nor loses what was counted.
    m.broker.messages('in', 1);
    text = await m.registry.metrics();
    expect(sample(text, 'fleetgate_mqtt_messages_total{direction="in"}')).toBe(6);
    expect(sample(text, 'fleetgate_mqtt_handshakes_total{kind="full"}')).toBe(2);
  });
});
