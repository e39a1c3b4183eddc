// A deliberately thin MQTT 3.1.1 load generator over raw `tls.connect`: hand-built CONNECT,
// DISCONNECT, SUBSCRIBE and PUBLISH packets, one prebuilt secure context per identity, so that the
// broker, not the client library, dominates the CPU spent per connection. Shared by every broker
// under test (ours and mosquitto) so both see exactly the same client load.
import { once } from 'node:events';
import { createSecureContext, connect as tlsConnect } from 'node:tls';

/** MQTT remaining-length varint (MQTT 3.1.1 section 2.2.3). */
function remainingLength(n) {
  const out = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

function utf8(s) {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

/**
 * CONNECT, protocol level 4 (3.1.1) or 5 (MQTT 5.0, with an empty property list, 3.1.2.11), clean
 * session, no username/password (identity is the certificate).
 */
export function connectPacket(clientId, keepAliveS = 600, protocolVersion = 4) {
  const variable = Buffer.concat([
    utf8('MQTT'),
    Buffer.from([protocolVersion, 0x02, keepAliveS >> 8, keepAliveS & 0xff]),
    protocolVersion === 5 ? Buffer.from([0]) : Buffer.alloc(0),
  ]);
  const body = Buffer.concat([variable, utf8(clientId)]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

export const DISCONNECT = Buffer.from([0xe0, 0x00]);

export function subscribePacket(filter, packetId = 1) {
  const body = Buffer.concat([Buffer.from([packetId >> 8, packetId & 0xff]), utf8(filter), Buffer.from([0])]);
  return Buffer.concat([Buffer.from([0x82]), remainingLength(body.length), body]);
}

/**
 * PUBLISH: QoS 0 without a packet id; QoS 1 with `packetId` (MQTT 3.1.1 section 3.3). With
 * protocolVersion 5 the variable header ends with a property length, here 0 (MQTT 5.0 3.3.2.3).
 */
export function publishPacket(topic, payload, packetId, protocolVersion = 4) {
  const props = protocolVersion === 5 ? Buffer.from([0]) : Buffer.alloc(0);
  if (packetId === undefined) {
    const body = Buffer.concat([utf8(topic), props, payload]);
    return Buffer.concat([Buffer.from([0x30]), remainingLength(body.length), body]);
  }
  const body = Buffer.concat([utf8(topic), Buffer.from([packetId >> 8, packetId & 0xff]), props, payload]);
  return Buffer.concat([Buffer.from([0x32]), remainingLength(body.length), body]);
}

/**
 * Splits a byte stream into MQTT packets; calls onPacket(type, packetBuffer) for each.
 * Returns a `(chunk) => void` feeder.
 */
export function packetReader(onPacket) {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    let off = 0;
    for (;;) {
      if (buf.length - off < 2) break;
      let len = 0;
      let mul = 1;
      let i = off + 1;
      let complete = false;
      for (; i < buf.length && i < off + 5; i++) {
        len += (buf[i] & 0x7f) * mul;
        mul *= 128;
        if ((buf[i] & 0x80) === 0) {
          complete = true;
          i++;
          break;
        }
      }
      if (!complete || buf.length - i < len) break;
      onPacket(buf[off] >> 4, buf.subarray(off, i + len));
      off = i + len;
    }
    buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
  };
}

/** One secure context per identity: key + certificate + the CA bundle to verify the broker, TLS 1.3 only. */
export function identityContext({ keyPem, certPem }, caPem, { minVersion = 'TLSv1.3', maxVersion = 'TLSv1.3' } = {}) {
  return createSecureContext({ key: keyPem, cert: certPem, ca: caPem, minVersion, maxVersion });
}

/**
 * Opens a TLS connection (from `localAddress`, if given) and completes MQTT CONNECT/CONNACK. Resolves with
 * { socket, reused, session() } where session() is the latest ticket the broker sent.
 * Rejects on a refused CONNACK, a TLS error or timeoutMs.
 */
export function mqttConnect({
  port,
  host = '127.0.0.1',
  localAddress,
  secureContext,
  clientId,
  session,
  timeoutMs = 15_000,
  protocolVersion = 4,
}) {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      port,
      host,
      secureContext,
      session,
      noDelay: true,
      ...(localAddress ? { localAddress } : {}),
    });
    let latest;
    socket.on('session', (s) => {
      latest = s;
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect ${clientId}: timeout`));
    }, timeoutMs);
    let done = false;
    const fail = (e) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    };
    socket.once('error', fail);
    socket.once('close', () => fail(new Error(`connect ${clientId}: closed before CONNACK`)));
    socket.once('secureConnect', () => socket.write(connectPacket(clientId, 600, protocolVersion)));
    const feed = packetReader((type, p) => {
      if (done) return;
      if (type !== 2) return fail(new Error(`connect ${clientId}: expected CONNACK, got type ${type}`));
      if (p[3] !== 0) return fail(new Error(`connect ${clientId}: CONNACK return code ${p[3]}`));
      done = true;
      clearTimeout(timer);
      socket.removeListener('data', feed);
      socket.resume(); // keep reading: session tickets and PINGRESPs still arrive
      socket.removeAllListeners('error');
      socket.removeAllListeners('close');
      socket.on('error', () => {});
      resolve({ socket, reused: socket.isSessionReused(), session: () => latest });
    });
    socket.on('data', feed);
  });
}

/**
 * One full connect cycle: TLS (resumed if `session` is given and accepted) + CONNECT/CONNACK +
 * DISCONNECT, resolving after the socket closed with { reused, session } (the newest ticket).
 */
export async function connectCycle(opts) {
  const c = await mqttConnect(opts);
  // Tickets (TLS 1.3 NewSessionTicket) may trail the CONNACK; keep reading until the close.
  const closed = once(c.socket, 'close');
  c.socket.end(DISCONNECT);
  await closed;
  return { reused: c.reused, session: c.session() };
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` running; resolves with { ok, failed, errors }. */
export async function pool(count, concurrency, task) {
  let next = 0;
  let ok = 0;
  let failed = 0;
  const errors = new Map();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const i = next++;
        try {
          await task(i);
          ok++;
        } catch (e) {
          failed++;
          const key = String(e?.message ?? e).replace(/\S*bench-\S*/g, '<id>');
          errors.set(key, (errors.get(key) ?? 0) + 1);
        }
      }
    }),
  );
  return { ok, failed, errors: Object.fromEntries(errors) };
}
