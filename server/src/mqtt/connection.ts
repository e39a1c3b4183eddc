/**
 * One client connection of the broker, from the end of its TLS handshake to its close, as an
 * explicit state machine:
 *
 *   handshaken ──► connect-read ──► admitted ──► closing ──► closed
 *        └──────────────┴───────────────┴──────────┘  (any state may end)
 *
 * - handshaken: TLS is up and the peer certificate named an identity; no CONNECT yet.
 * - connect-read: the first CONNECT was read and admitted (admission.ts); the connection claims
 *   its client id and is in aedes' hands. Nothing has been acknowledged yet.
 * - admitted: CONNACK 0 has left (MQTT 3.1.1 3.2.2.3): the client counts as connected.
 * - closing: the broker decided to end it (or learnt why it ends); the socket is going away.
 * - closed: the socket closed; the registry has forgotten it.
 *
 * A connection has exactly one end cause: the first one given wins and later ones are ignored
 * (a revocation that closes a connection is followed by aedes' error for the same close, a
 * keepalive expiry by the protocol error aedes raises for it, [MQTT-3.1.2-24]).
 */
import type { Client } from 'aedes';
import type { IConnectPacket } from 'mqtt-packet';
import type { Rights } from './acl.js';
import type { DisconnectCause, Identity, RefusalReason } from './types.js';

export type ConnectionState = 'handshaken' | 'connect-read' | 'admitted' | 'closing' | 'closed';

/** Why a connection ended: a refusal before CONNACK 0, or a disconnect cause after it. */
export type EndCause = DisconnectCause | RefusalReason;

/** Forward moves of the life cycle; `end` and `closed` are reachable from every open state. */
const NEXT: Readonly<Record<ConnectionState, readonly ConnectionState[]>> = {
  handshaken: ['connect-read', 'closing', 'closed'],
  'connect-read': ['admitted', 'closing', 'closed'],
  admitted: ['closing', 'closed'],
  closing: ['closed'],
  closed: [],
};

const DISCONNECT_CAUSES: ReadonlySet<string> = new Set<DisconnectCause>([
  'client',
  'connection_lost',
  'takeover',
  'revoked',
  'expired',
  'keepalive',
  'protocol_error',
  'packet_too_large',
  'slow_consumer',
  'shutdown',
  'acl_violation',
]);

/** The part of the transport a Connection drives: closing it. */
export interface Closable {
  destroy(): void;
}

export class Connection<L extends Closable = Closable> {
  private current: ConnectionState = 'handshaken';
  private cause: EndCause | null = null;
  /** Whether CONNACK 0 left before the connection started to end (it then counts as a disconnect). */
  private wasAdmitted = false;
  /** The client id aedes knows this connection by, once its CONNECT was admitted. */
  clientId: string | null = null;
  /** Order of the claims in this process: a later claim of the same client id takes over. */
  claimSeq = 0;
  /**
   * The admitted CONNECT as parsed (its MQTT 5 properties included), until the connection claims
   * its client id: an idle connection does not keep it.
   */
  connect: IConnectPacket | null = null;
  /** The CONNECT deadline, until the first CONNECT is decided (or the link closes). */
  connectDeadline: NodeJS.Timeout | null = null;
  /** aedes' client, once the connection was handed to aedes. */
  client: Client | null = null;
  /** performance.now() of the revocation event that closed it. */
  revokedAt: number | null = null;
  /** The link's lastActivity already reported to presence. */
  reportedActivity = 0;
  private pending: Set<string> | null = null;

  constructor(
    readonly identity: Identity,
    readonly rights: Rights,
    readonly link: L,
  ) {}

  get state(): ConnectionState {
    return this.current;
  }

  /** CONNACK 0 left and the connection has not started to end. */
  get admitted(): boolean {
    return this.current === 'admitted';
  }

  /** CONNACK 0 left at some point (also true while closing or closed afterwards). */
  get everAdmitted(): boolean {
    return this.wasAdmitted;
  }

  get endCause(): EndCause | null {
    return this.cause;
  }

  /**
   * Filters granted but not yet in aedes' client.subscriptions (aedes adds a SUBSCRIBE's filters
   * only after authorizing all of them); allocated on the first SUBSCRIBE only.
   */
  get pendingFilters(): Set<string> {
    this.pending ??= new Set();
    return this.pending;
  }

  hasPendingFilters(): boolean {
    return this.pending !== null && this.pending.size > 0;
  }

  /** The first CONNECT was decided (or will never come): its deadline is no longer needed. */
  connectDecided(): void {
    if (this.connectDeadline === null) return;
    clearTimeout(this.connectDeadline);
    this.connectDeadline = null;
  }

  /** Moves forward; false (state unchanged) for a move the life cycle does not have. */
  advance(to: ConnectionState): boolean {
    if (!NEXT[this.current].includes(to)) return false;
    if (to === 'admitted') this.wasAdmitted = true;
    this.current = to;
    return true;
  }

  /**
   * The admitted connection claims `clientId` (the name aedes keys its session by), in claim
   * order `seq`; once, and only after admission.
   */
  claim(clientId: string, seq: number): boolean {
    if (this.current !== 'connect-read' || this.clientId !== null) return false;
    this.clientId = clientId;
    this.claimSeq = seq;
    this.connect = null;
    return true;
  }

  /**
   * Records why the connection ends and moves it to closing. The first cause wins: true if this
   * call set it, false if the connection already had one (or is closed).
   */
  end(cause: EndCause): boolean {
    if (this.cause !== null || this.current === 'closed') return false;
    this.cause = cause;
    if (this.current !== 'closing') this.current = 'closing';
    return true;
  }

  /** Ends with `cause` (if it has none yet) and closes the transport. */
  close(cause: EndCause): void {
    if (this.current === 'closed') return;
    this.end(cause);
    if (this.client) this.client.close();
    else this.link.destroy();
  }

  /**
   * The socket closed: the final state. Returns the disconnect cause to report when the
   * connection had been admitted (null otherwise), `fallback` when nothing said why.
   */
  closed(fallback: DisconnectCause): DisconnectCause | null {
    if (this.current === 'closed') return null;
    this.current = 'closed';
    if (!this.wasAdmitted) return null;
    const cause = this.cause ?? fallback;
    // A refusal reason can only be a cause before CONNACK 0; after it the link's verdicts say
    // protocol_error.
    return DISCONNECT_CAUSES.has(cause) ? (cause as DisconnectCause) : 'protocol_error';
  }
}
