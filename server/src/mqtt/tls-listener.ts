/**
 * The broker's TLS server: TLS 1.2/1.3 with ECDHE + AEAD suites only, a client certificate
 * required and verified against the issuing CA + root, a handshake deadline, and session tickets
 * whose key is shared through the store (ticket-keys.ts) so any broker process resumes any
 * other's session (RFC 8446 4.6.1). The peer is checked on EVERY handshake, full or resumed
 * (identity.ts): a resumed session carries the verdict of its first handshake only.
 */
import type { Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls';
import type { Logger } from 'pino';
import type { MqttConfig } from '../config.js';
import type { Store } from '../store/types.js';
import { checkPeer, PeerIdentityCache } from './identity.js';
import { startTicketKeyRotation, type TicketKeyRotation } from './ticket-keys.js';
import type { BrokerObserver, Identity } from './types.js';

/** TLS 1.3 suites (all AEAD + ephemeral), then TLS 1.2 ECDHE + AEAD only. */
const CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** The same on every broker process, so a ticket from one resumes on all (RFC 8446 4.6.1). */
const SESSION_ID_CONTEXT = 'fleetgate-mqtt-v1';

export interface TlsListener {
  /** Feeds a TCP socket that passed the gate into the TLS server. */
  accept(raw: Socket): void;
  close(): void;
}

export async function startTlsListener(opts: {
  tls: { keyPem: string; chainPem: string; caPem: string };
  config: Pick<MqttConfig, 'handshakeTimeoutMs' | 'ticketLifetimeMs' | 'ticketRotationMs'>;
  store: Pick<Store, 'listTicketKeys' | 'insertTicketKey'>;
  observer: Pick<BrokerObserver, 'handshake' | 'refused'>;
  log: Logger;
  /** The handshake on `socket` ended, done or failed (frees the gate's slot). */
  handshakeEnded(socket: TLSSocket): void;
  /** Whether new connections are still taken (false while shutting down). */
  accepting(): boolean;
  /** A verified peer with an identity. */
  connected(socket: TLSSocket, identity: Identity): void;
}): Promise<TlsListener> {
  const { config, observer, log } = opts;
  const server: TlsServer = createTlsServer({
    key: opts.tls.keyPem,
    cert: opts.tls.chainPem,
    ca: opts.tls.caPem,
    requestCert: true,
    // Verified in checkPeer (same OpenSSL verdict Node would act on), so a refusal has a reason.
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.3',
    ciphers: CIPHERS,
    honorCipherOrder: true,
    ecdhCurve: 'X25519:P-256:P-384',
    handshakeTimeout: config.handshakeTimeoutMs,
    sessionTimeout: Math.max(1, Math.floor(config.ticketLifetimeMs / 1000)),
    // Node's default session id context hashes process.argv: a cluster worker (another entry
    // script) or a node started with other arguments would refuse every other's tickets.
    sessionIdContext: SESSION_ID_CONTEXT,
  });

  const rotation: TicketKeyRotation = await startTicketKeyRotation({
    store: opts.store,
    rotationMs: config.ticketRotationMs,
    lifetimeMs: config.ticketLifetimeMs,
    install: (key) => server.setTicketKeys(key),
    log,
  });

  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    opts.handshakeEnded(socket);
    // With a listener installed Node leaves the socket open (a handshake timeout included).
    socket.destroy();
    observer.refused('handshake_failed');
    log.debug({ code: err.code, err: err.message }, 'TLS handshake failed');
  });

  const identities = new PeerIdentityCache();
  server.on('secureConnection', (socket: TLSSocket) => {
    opts.handshakeEnded(socket);
    socket.on('error', () => undefined);
    if (!opts.accepting()) return socket.destroy();
    const peer = checkPeer(socket, identities);
    if (!peer.ok) {
      observer.refused(peer.reason);
      log.debug({ reason: peer.reason, detail: peer.detail }, 'TLS peer refused');
      return socket.destroy();
    }
    observer.handshake(socket.isSessionReused() ? 'resumed' : 'full');
    opts.connected(socket, peer.identity);
  });

  return {
    accept: (raw) => server.emit('connection', raw),
    close: () => rotation.close(),
  };
}
