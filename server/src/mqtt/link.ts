/**
 * The stream aedes reads and writes for one client: a thin Duplex over the TLS socket that
 * frames MQTT packets on the way in (fixed header + remaining length only, never the payload)
 * to enforce, before aedes buffers anything:
 *
 * - the first packet is CONNECT [MQTT-3.1.0-1]; anything else is garbage and closes the link;
 * - the first CONNECT is held back until it is whole and handed to `onConnect` (admission.ts):
 *   nothing reaches the reader (aedes) before the broker has admitted it;
 * - a CONNECT with protocol name MQTT or MQIsdp but a level other than 3, 4 or 5 gets CONNACK 0x01
 *   (unacceptable protocol level) before the link closes [MQTT-3.1.2-2]; mqtt-packet would only
 *   fail to parse it, and aedes would close without a word;
 * - SUBSCRIBE and UNSUBSCRIBE carry at least one topic filter [MQTT-3.8.3-3, MQTT-3.10.3-2], and
 *   they and QoS 1/2 PUBLISHes a non-zero packet identifier [MQTT-2.3.1-1]: mqtt-packet accepts
 *   both mistakes, and aedes would answer an empty SUBACK or acknowledge packet id 0;
 * - the remaining length is well formed (at most 4 bytes, MQTT 3.1.1 section 2.2.3) and not above
 *   the configured maximum packet size: an oversized packet closes the link when its header
 *   arrives, not after megabytes were buffered;
 * - a per-connection packet rate (token bucket) over the packets a client sends on its own
 *   initiative: PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ. Acknowledgements of the broker's
 *   deliveries (PUBACK, PUBREC, PUBCOMP) are free, so a busy subscriber never throttles what it
 *   receives. Over budget, reads from the socket pause until the bucket refills, so a flooding
 *   client (publishes, or 1M PINGREQs a second) is throttled by TCP backpressure instead of
 *   filling the broker's memory or CPU. Its packets are neither lost nor reordered.
 *
 * Writes go straight to the socket; chunks corked by mqtt-packet arrive together in _writev and
 * leave as one TLS record. A destroy without error (aedes closing a client normally) flushes
 * what was written (a refusing CONNACK, say) before closing; with an error it cuts at once.
 */
import { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { refusalConnack } from './reason-codes.js';

export type LinkViolation = 'not_connect' | 'bad_length' | 'too_large' | 'unsupported_level' | 'malformed';

export interface LinkOptions {
  maxPacketSize: number;
  /** Charged packets (PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ) per second; 0 = unlimited. */
  publishRate: number;
  publishBurst: number;
  onViolation(kind: LinkViolation): void;
  onPublishes(count: number): void;
  onThrottle(): void;
  /** CONNACK with return code 0 handed to TLS: from here on the client is admitted. */
  onAccepted(): void;
  /**
   * The first CONNECT arrived whole (`packet`: its bytes, fixed header included). True lets it
   * and what follows through to the reader; false: the callee refused it and closes the link.
   */
  onConnect(packet: Buffer): boolean;
  /** A well-formed DISCONNECT arrived (MQTT 3.1.1 3.14): the client says goodbye. */
  onDisconnect(): void;
}

enum Frame {
  Header,
  Length,
  Body,
}

const PUBLISH = 3;
const CONNECT = 1;
const SUBSCRIBE = 8;
const UNSUBSCRIBE = 10;
const DISCONNECT = 14;
/** MQTT 3.1.1 3.2.2.3: CONNACK, return code 0x01 unacceptable protocol level. */
const CONNACK_BAD_LEVEL = refusalConnack('unsupported_level', 4);
/** Protocol levels aedes speaks: 3 (3.1, "MQIsdp"), 4 (3.1.1), 5 (5.0). */
const LEVELS = new Set([3, 4, 5]);
/** Packet types charged to the rate bucket (MQTT 3.1.1 2.2.1): 3, 6, 8, 10, 12. */
const CHARGED = new Set([PUBLISH, 6, 8, 10, 12]);
const FLUSH_GRACE_MS = 2_000;
/**
 * Reads aedes may make within one event-loop turn. aedes reads, parses and handles a batch, and
 * when mqemitter completes the batch synchronously it reads the next one from inside that same
 * call chain (Client nextBatch -> read -> parse -> publish -> mqemitter -> published -> nextBatch
 * ...): an unthrottled flood then grows one stack until "Maximum call stack size exceeded" kills
 * the process (seen in the flood test with the publish rate limit off). Past this many reads in
 * one turn, read() answers null and the link announces 'readable' again on the next turn, so the
 * chain unwinds. Nothing is dropped or reordered: the data stays in the stream's buffer.
 */
const MAX_SYNC_READS = 32;

export class MqttLink extends Duplex {
  private frame = Frame.Header;
  private packetType = 0;
  private headerFlags = 0;
  private lengthValue = 0;
  private lengthMultiplier = 1;
  private lengthBytes = 0;
  private bodyLeft = 0;
  private seenConnect = false;
  /** The first packet (the CONNECT) has arrived whole: an error before that is not its parse. */
  connectReceived = false;
  /** Bytes read before the first CONNECT was decided (the CONNECT, then whatever followed it). */
  private held: Buffer[] | null = [];
  /** Size of the first CONNECT (fixed header + remaining length), once its header is read. */
  private connectSize = 0;
  /** The TLS socket failed (reset, ...): the connection was lost, nothing was refused. */
  socketFailed = false;
  /**
   * Packet identifier check of the current packet: the body offset of the next byte wanted (-1:
   * none), the bytes read so far, and whether they are a PUBLISH's topic length (the identifier
   * follows the topic) rather than the identifier itself.
   */
  private idAt = -1;
  private idValue = 0;
  private idBytes = 0;
  private idAfterTopic = false;
  /** Body bytes of the current packet already scanned. */
  private bodyPos = 0;
  /** The CONNECT's first body bytes (protocol name and level) until inspected; then null. */
  private connectHead: Buffer | null = Buffer.alloc(0);
  private tokens: number;
  private refilledAt = performance.now();
  private throttleTimer: NodeJS.Timeout | null = null;
  private downstreamFull = false;
  private readsThisTurn = 0;
  private turnScheduled = false;
  private readableDeferred = false;
  /** Charged packets seen by the last scan. */
  private charged = 0;
  /** Last time a packet arrived (ms since the epoch), for presence. */
  lastActivity = Date.now();
  /** The client sent DISCONNECT (a clean goodbye, MQTT 3.1.1 section 3.14). */
  sawDisconnect = false;
  private goodbyeReported = false;
  /** First bytes written (until 4): the CONNACK. null once inspected. */
  private connackHead: Buffer | null = Buffer.alloc(0);

  constructor(
    readonly socket: TLSSocket,
    private readonly opts: LinkOptions,
  ) {
    super({ allowHalfOpen: false, readableHighWaterMark: 64 * 1024 });
    this.tokens = opts.publishBurst;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.push(null));
    socket.on('close', () => this.destroy());
    socket.on('error', (e) => {
      this.socketFailed = true;
      this.destroy(e);
    });
    socket.on('drain', () => this.emit('socketDrain'));
  }

  private onData(data: Buffer): void {
    let chunk = data;
    if (this.destroyed) return;
    const publishes = this.scan(chunk);
    if (publishes < 0) return;
    this.lastActivity = Date.now();
    if (publishes > 0) this.opts.onPublishes(publishes);
    if (this.held) {
      this.held.push(chunk);
      if (!this.connectReceived) return;
      const bytes = this.held.length === 1 ? chunk : Buffer.concat(this.held);
      this.held = null;
      if (!this.opts.onConnect(bytes.subarray(0, this.connectSize)) || this.destroyed) return;
      chunk = bytes;
    }
    // Reported once the CONNECT before it was admitted (both may come in one read).
    if (this.sawDisconnect && !this.goodbyeReported) {
      this.goodbyeReported = true;
      this.opts.onDisconnect();
    }
    if (!this.push(chunk)) {
      this.downstreamFull = true;
      this.socket.pause();
    }
    if (this.charged > 0 && this.opts.publishRate > 0) this.charge(this.charged);
  }

  /**
   * Walks packet boundaries in `chunk`; returns the number of PUBLISH headers seen, or -1, and
   * leaves the number of charged packets in `charged`.
   */
  private scan(chunk: Buffer): number {
    let publishes = 0;
    this.charged = 0;
    let i = 0;
    while (i < chunk.length) {
      switch (this.frame) {
        case Frame.Header: {
          const type = chunk[i]! >> 4;
          if (!this.seenConnect) {
            if (type !== CONNECT) return this.violation('not_connect');
            // CONNECT's reserved flags are 0 [MQTT-2.2.2-1]; otherwise close [MQTT-2.2.2-2].
            if ((chunk[i]! & 0x0f) !== 0) return this.violation('malformed');
          }
          this.seenConnect = true;
          this.packetType = type;
          this.headerFlags = chunk[i]! & 0x0f;
          this.lengthValue = 0;
          this.lengthMultiplier = 1;
          this.lengthBytes = 0;
          this.frame = Frame.Length;
          i++;
          break;
        }
        case Frame.Length: {
          const b = chunk[i]!;
          i++;
          this.lengthValue += (b & 0x7f) * this.lengthMultiplier;
          this.lengthMultiplier *= 128;
          this.lengthBytes++;
          if (b & 0x80) {
            if (this.lengthBytes >= 4) return this.violation('bad_length');
            break;
          }
          if (this.lengthValue > this.opts.maxPacketSize) return this.violation('too_large');
          if (this.packetType === PUBLISH) publishes++;
          // Only a well-formed DISCONNECT (flags 0: MQTT 3.1.1 2.2.2) is a goodbye; with other flags
          // mqtt-packet refuses it and the close is a protocol error [MQTT-2.2.2-2].
          else if (this.packetType === DISCONNECT && this.headerFlags === 0) this.sawDisconnect = true;
          if (CHARGED.has(this.packetType)) this.charged++;
          this.idAt = -1;
          if (this.packetType === SUBSCRIBE || this.packetType === UNSUBSCRIBE) {
            // A packet identifier and at least one filter (2-byte length, then the filter).
            if (this.lengthValue <= 2) return this.violation('malformed');
            this.watchId(false);
          } else if (this.packetType === PUBLISH && (this.headerFlags & 0x06) !== 0) {
            this.watchId(true);
          }
          if (!this.connectReceived) this.connectSize = 1 + this.lengthBytes + this.lengthValue;
          this.bodyPos = 0;
          this.bodyLeft = this.lengthValue;
          this.frame = this.bodyLeft > 0 ? Frame.Body : Frame.Header;
          // A CONNECT without a body has no level to read (mqtt-packet refuses it); never read a later packet's.
          if (this.bodyLeft === 0) {
            this.connectHead = null;
            this.connectReceived = true;
          }
          break;
        }
        case Frame.Body: {
          const take = Math.min(this.bodyLeft, chunk.length - i);
          if (this.connectHead && !this.levelAcceptable(chunk.subarray(i, i + take), this.bodyLeft === take)) {
            return this.refuseLevel();
          }
          if (this.idAt >= 0 && !this.idAcceptable(chunk, i, take)) return this.violation('malformed');
          this.bodyPos += take;
          this.bodyLeft -= take;
          i += take;
          if (this.bodyLeft === 0) {
            this.frame = Frame.Header;
            this.connectReceived = true;
          }
          break;
        }
      }
    }
    return publishes;
  }

  /**
   * Reads the CONNECT's protocol name and level (3.1.2.1, 3.1.2.2) from the body bytes as they
   * come. False only for a known protocol name with a level aedes does not speak; anything
   * malformed is left to mqtt-packet, which refuses it.
   */
  private levelAcceptable(bytes: Buffer, lastOfBody: boolean): boolean {
    const head = Buffer.concat([this.connectHead as Buffer, bytes.subarray(0, 9)]);
    const nameLength = head.length >= 2 ? head.readUInt16BE(0) : -1;
    if (nameLength > 6) {
      this.connectHead = null;
      return true;
    }
    if (nameLength < 0 || head.length < 2 + nameLength + 1) {
      this.connectHead = lastOfBody ? null : head;
      return true;
    }
    this.connectHead = null;
    const name = head.toString('latin1', 2, 2 + nameLength);
    const level = (head[2 + nameLength] as number) & 0x7f; // 0x80: bridge flag some brokers send
    return !(name === 'MQTT' || name === 'MQIsdp') || LEVELS.has(level);
  }

  /** Starts reading a 2-byte field at body offset `at`: the identifier, or a PUBLISH's topic length. */
  private watchId(afterTopic: boolean, at = 0): void {
    this.idAt = at;
    this.idValue = 0;
    this.idBytes = 0;
    this.idAfterTopic = afterTopic;
  }

  /**
   * Reads the packet identifier of the current packet from `take` body bytes of `chunk` at `i`
   * (body offset `bodyPos`), as they come; false once it reads 0.
   */
  private idAcceptable(chunk: Buffer, i: number, take: number): boolean {
    const end = this.bodyPos + take;
    while (this.idAt >= 0 && this.idAt < end) {
      this.idValue = (this.idValue << 8) | (chunk[i + this.idAt - this.bodyPos] as number);
      this.idAt++;
      if (++this.idBytes < 2) continue;
      if (this.idAfterTopic) {
        // That was the topic length (3.3.2.1); the identifier follows the topic (3.3.2.2).
        this.watchId(false, this.idAt + this.idValue);
      } else {
        this.idAt = -1;
        if (this.idValue === 0) return false;
      }
    }
    return true;
  }

  private refuseLevel(): -1 {
    this.opts.onViolation('unsupported_level');
    this.socket.write(CONNACK_BAD_LEVEL);
    this.destroy(); // without an error: flushes the CONNACK, then closes (_destroy)
    return -1;
  }

  private violation(kind: LinkViolation): -1 {
    this.opts.onViolation(kind);
    this.socket.destroy();
    this.destroy();
    return -1;
  }

  private charge(packets: number): void {
    const now = performance.now();
    const { publishRate, publishBurst } = this.opts;
    this.tokens = Math.min(publishBurst, this.tokens + ((now - this.refilledAt) * publishRate) / 1000);
    this.refilledAt = now;
    this.tokens -= packets;
    if (this.tokens >= 0 || this.throttleTimer) return;
    this.opts.onThrottle();
    this.socket.pause();
    const waitMs = Math.ceil((-this.tokens * 1000) / publishRate);
    this.throttleTimer = setTimeout(() => {
      this.throttleTimer = null;
      this.maybeResume();
    }, waitMs);
  }

  private maybeResume(): void {
    if (!this.downstreamFull && !this.throttleTimer && !this.destroyed) this.socket.resume();
  }

  override _read(): void {
    this.downstreamFull = false;
    this.maybeResume();
  }

  // biome-ignore lint/suspicious/noExplicitAny: Readable#read's own signature
  override read(size?: number): any {
    if (this.readsThisTurn >= MAX_SYNC_READS) {
      this.readableDeferred = true;
      return null;
    }
    this.readsThisTurn++;
    if (!this.turnScheduled) {
      this.turnScheduled = true;
      setImmediate(() => {
        this.turnScheduled = false;
        this.readsThisTurn = 0;
        if (this.readableDeferred && !this.destroyed) {
          this.readableDeferred = false;
          this.emit('readable');
        }
      });
    }
    return super.read(size);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (error?: Error | null) => void): void {
    this.writeOut(chunk, cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (error?: Error | null) => void): void {
    this.writeOut(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  private writeOut(data: Buffer, cb: (error?: Error | null) => void): void {
    // The first packet out is the CONNACK: 0x20, the remaining length (3.1.1: 0x02; 5.0: one
    // byte too, its properties are a few dozen bytes), the flags, the code; code 0 admits.
    if (this.connackHead && !this.socket.destroyed) {
      const head = Buffer.concat([this.connackHead, data.subarray(0, 4)]);
      if (head.length < 4) this.connackHead = head;
      else {
        this.connackHead = null;
        if (head[0] === 0x20 && head[1]! >= 0x02 && head[1]! < 0x80 && head[3] === 0x00) this.opts.onAccepted();
      }
    }
    if (this.socket.destroyed) {
      cb(new Error('connection closed'));
    } else if (this.socket.write(data)) {
      cb();
    } else {
      // Backpressure: aedes sees write() return false on this stream and waits for 'drain'.
      this.once('socketDrain', () => cb());
    }
  }

  override _final(cb: (error?: Error | null) => void): void {
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    if (this.throttleTimer) clearTimeout(this.throttleTimer);
    this.throttleTimer = null;
    if (err || this.socket.destroyed) {
      this.socket.destroy();
    } else {
      // Flush what was written (e.g. a refusing CONNACK), then close; cut if the peer stalls.
      this.socket.end();
      const cut = setTimeout(() => this.socket.destroy(), FLUSH_GRACE_MS);
      cut.unref();
      this.socket.once('close', () => clearTimeout(cut));
    }
    cb(err);
  }
}
