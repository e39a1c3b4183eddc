/**
 * The packets one broker worker relays to the others (ipc-emitter.ts), encoded as one Buffer per
 * batch. The cluster IPC channel's structured clone handles a batch of packet objects one object
 * and one Buffer (a host object, decoded by a JavaScript callback) at a time; a CPU profile of the
 * QoS 0 benchmark with two workers put most of the primary's time in decoding them. One Buffer is
 * copied whole, the primary reads only the topics it routes on (interests.ts) and forwards
 * records as byte ranges, and the receiving worker decodes once.
 *
 * Record layout (little endian), one after another:
 *   u32 record length (these 4 bytes included) | u8 flags: qos (bits 0-1), retain (2), dup (3),
 *   message id present (4) | u16 message id | f64 brokerCounter | u8 length + cmd (latin1) |
 *   u8 length + brokerId (utf8) | u16 length + topic (utf8) | payload (the rest of the record)
 * Every aedes packet fits: an MQTT topic is at most 65,535 bytes (MQTT 3.1.1 section 1.5.3) and
 * broker ids are fleetgate's own.
 */
/** The fields of an aedes packet that travel (aedes-packet + what mqemitter matches on). */
export interface RelayedPacket {
  cmd: string;
  brokerId: string;
  brokerCounter: number;
  topic: string;
  /** Decoded packets carry a Buffer (a view into the batch). */
  payload: Buffer | Uint8Array | string;
  qos: number;
  retain: boolean;
  dup: boolean;
  messageId?: number;
}

/** Where one record sits in a batch, and what the primary routes on. */
export interface RelayRecord {
  topic: string;
  retain: boolean;
  start: number;
  end: number;
}

const FIXED = 4 + 1 + 2 + 8;
const RETAIN = 0x04;
const DUP = 0x08;
const HAS_ID = 0x10;

function bytesOf(payload: RelayedPacket['payload']): Buffer {
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8');
  if (Buffer.isBuffer(payload)) return payload;
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
}

export function encodePackets(packets: readonly RelayedPacket[]): Buffer {
  const parts = packets.map((p) => {
    const cmd = Buffer.from(p.cmd, 'latin1');
    const brokerId = Buffer.from(p.brokerId ?? '', 'utf8');
    const topic = Buffer.from(p.topic, 'utf8');
    if (cmd.length > 255 || brokerId.length > 255 || topic.length > 0xffff) {
      throw new Error('relay: packet field too long');
    }
    return { p, cmd, brokerId, topic, payload: bytesOf(p.payload) };
  });
  let size = 0;
  for (const x of parts)
    size += FIXED + 1 + x.cmd.length + 1 + x.brokerId.length + 2 + x.topic.length + x.payload.length;
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (const { p, cmd, brokerId, topic, payload } of parts) {
    const start = o;
    const length = FIXED + 1 + cmd.length + 1 + brokerId.length + 2 + topic.length + payload.length;
    o = out.writeUInt32LE(length, o);
    const hasId = typeof p.messageId === 'number';
    o = out.writeUInt8((p.qos & 0x03) | (p.retain ? RETAIN : 0) | (p.dup ? DUP : 0) | (hasId ? HAS_ID : 0), o);
    o = out.writeUInt16LE(hasId ? (p.messageId as number) & 0xffff : 0, o);
    o = out.writeDoubleLE(p.brokerCounter ?? 0, o);
    o = out.writeUInt8(cmd.length, o);
    o += cmd.copy(out, o);
    o = out.writeUInt8(brokerId.length, o);
    o += brokerId.copy(out, o);
    o = out.writeUInt16LE(topic.length, o);
    o += topic.copy(out, o);
    o += payload.copy(out, o);
    if (o !== start + length) throw new Error('relay: encoding error');
  }
  return out;
}

/** Walks a batch; `visit` gets each record's start, end and the offset of its topic length. */
function walk(buf: Buffer, visit: (start: number, end: number, topicAt: number) => void): void {
  let o = 0;
  while (o < buf.length) {
    if (buf.length - o < FIXED + 4) throw new Error('relay: truncated record');
    const length = buf.readUInt32LE(o);
    const end = o + length;
    if (length < FIXED + 4 || end > buf.length) throw new Error('relay: bad record length');
    let t = o + FIXED;
    t += 1 + buf.readUInt8(t);
    if (t >= end) throw new Error('relay: bad record');
    t += 1 + buf.readUInt8(t);
    if (t + 2 > end || t + 2 + buf.readUInt16LE(t) > end) throw new Error('relay: bad record');
    visit(o, end, t);
    o = end;
  }
}

/** Topic, retain flag and byte range of every record (the primary's routing view). */
export function relayRecords(buf: Buffer): RelayRecord[] {
  const out: RelayRecord[] = [];
  walk(buf, (start, end, t) => {
    const topicEnd = t + 2 + buf.readUInt16LE(t);
    out.push({
      topic: buf.toString('utf8', t + 2, topicEnd),
      retain: ((buf[start + 4] as number) & RETAIN) !== 0,
      start,
      end,
    });
  });
  return out;
}

export function decodePackets(buf: Buffer): RelayedPacket[] {
  const out: RelayedPacket[] = [];
  walk(buf, (start, end, t) => {
    const flags = buf.readUInt8(start + 4);
    const cmdLen = buf.readUInt8(start + FIXED);
    const idAt = start + FIXED + 1 + cmdLen;
    const idLen = buf.readUInt8(idAt);
    const topicEnd = t + 2 + buf.readUInt16LE(t);
    const packet: RelayedPacket = {
      cmd: buf.toString('latin1', start + FIXED + 1, idAt),
      brokerId: buf.toString('utf8', idAt + 1, idAt + 1 + idLen),
      brokerCounter: buf.readDoubleLE(start + 7),
      topic: buf.toString('utf8', t + 2, topicEnd),
      payload: buf.subarray(topicEnd, end),
      qos: flags & 0x03,
      retain: (flags & RETAIN) !== 0,
      dup: (flags & DUP) !== 0,
    };
    if (flags & HAS_ID) packet.messageId = buf.readUInt16LE(start + 5);
    out.push(packet);
  });
  return out;
}

/** The records of `buf` at `ranges`, as one batch. */
export function selectRecords(buf: Buffer, ranges: readonly RelayRecord[]): Buffer {
  return Buffer.concat(ranges.map((r) => buf.subarray(r.start, r.end)));
}
