/**
 * The TCP gate in front of the broker's TLS server: a per-source-IP connection rate (token
 * bucket, burst = rate) and a cap on connections still in their TLS handshake. A socket over
 * either is destroyed before any TLS work, so a connect flood costs a TCP accept, not a
 * handshake. noDelay: Nagle would hold a TLS 1.3 CONNACK back by ~40 ms.
 */
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { RefusalReason } from './types.js';

/** New connections per second per source IP, burst of the same size; 0 = unlimited. */
export class IpRate {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly ratePerSecond: number) {}

  /** Takes a token for `ip` at `now` (ms, monotonic); false when its bucket is empty. */
  allow(ip: string, now: number): boolean {
    const rate = this.ratePerSecond;
    if (rate <= 0) return true;
    const b = this.buckets.get(ip) ?? { tokens: rate, at: now };
    b.tokens = Math.min(rate, b.tokens + ((now - b.at) * rate) / 1000);
    b.at = now;
    this.buckets.set(ip, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Forgets buckets idle for `idleMs` (they would be full again anyway). */
  prune(now: number, idleMs: number): void {
    for (const [ip, b] of this.buckets) if (now - b.at > idleMs) this.buckets.delete(ip);
  }

  get tracked(): number {
    return this.buckets.size;
  }
}

/** Something that closes: a socket in its handshake. */
export interface HandshakeSocket {
  destroy(): void;
  once(event: 'close', listener: () => void): unknown;
}

/** Connections in their TLS handshake, at most `max`; a slot frees on handshake end or close. */
export class HandshakeCap<S extends HandshakeSocket = HandshakeSocket> {
  private readonly inFlight = new Map<S, () => void>();

  constructor(private readonly max: number) {}

  /** Takes a slot for `socket`; false when all are taken. */
  enter(socket: S): boolean {
    if (this.inFlight.size >= this.max) return false;
    const leave = () => this.inFlight.delete(socket);
    this.inFlight.set(socket, leave);
    socket.once('close', leave);
    return true;
  }

  /** The handshake of `socket` ended (done or failed). */
  leave(socket: S): void {
    this.inFlight.delete(socket);
  }

  get size(): number {
    return this.inFlight.size;
  }

  destroyAll(): void {
    for (const s of [...this.inFlight.keys()]) s.destroy();
  }
}

/** The raw TCP socket under a server-side TLSSocket (Node keeps it as `_parent`). */
export function rawSocketOf(tlsSocket: TLSSocket): Socket | undefined {
  return (tlsSocket as unknown as { _parent?: Socket })._parent;
}

const PRUNE_EVERY_MS = 10_000;

export interface TcpGate {
  server: NetServer;
  /** The TLS handshake on `tlsSocket` ended (secureConnection or tlsClientError). */
  handshakeEnded(tlsSocket: TLSSocket): void;
  /** Stops accepting and cuts the handshakes in flight. */
  close(): Promise<void>;
}

export function createTcpGate(opts: {
  connRatePerIp: number;
  maxHandshakes: number;
  refused(reason: Extract<RefusalReason, 'ip_rate_limited' | 'handshake_limit'>): void;
  /** Hands an accepted socket to the TLS server. */
  pass(raw: Socket): void;
}): TcpGate {
  const rate = new IpRate(opts.connRatePerIp);
  const cap = new HandshakeCap<Socket>(opts.maxHandshakes);
  let closing = false;
  const prune = setInterval(() => rate.prune(performance.now(), PRUNE_EVERY_MS), PRUNE_EVERY_MS);
  prune.unref();

  const server = createNetServer({ noDelay: true }, (raw: Socket) => {
    raw.on('error', () => undefined);
    if (closing) return raw.destroy();
    if (!rate.allow(raw.remoteAddress ?? '?', performance.now())) {
      opts.refused('ip_rate_limited');
      return raw.destroy();
    }
    if (!cap.enter(raw)) {
      opts.refused('handshake_limit');
      return raw.destroy();
    }
    raw.setNoDelay(true);
    opts.pass(raw);
  });

  return {
    server,
    handshakeEnded(tlsSocket) {
      const raw = rawSocketOf(tlsSocket);
      if (raw) cap.leave(raw);
    },
    close() {
      closing = true;
      clearInterval(prune);
      const closed = new Promise<void>((r) => server.close(() => r()));
      cap.destroyAll();
      return closed;
    },
  };
}
