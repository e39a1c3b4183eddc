/**
 * MQTT over mTLS with TLS session resumption, on MQTT.js.
 *
 * - One prebuilt `secureContext` per credential (pinned CA, certificate + chain, key or engine).
 * - We build the TLS stream ourselves (MQTT.js accepts a stream builder), so the saved TLS session
 *   is offered on every (re)connect and each new ticket (`'session'` on the TLSSocket) is kept in
 *   memory and persisted to the credential directory: a rebooted device resumes too.
 * - Reconnects are ours, not MQTT.js's: jittered exponential backoff, and the same MqttClient (and
 *   its outgoing store) across reconnects and credential switches, so queued QoS >= 1 messages and
 *   QoS 0 messages published while offline survive.
 * - A broker refusal (CONNACK "not authorized"/"bad credentials", TLS alert) stops the session:
 *   it asks the CRL whether we are revoked and reports `revoked` or NOT_AUTHORIZED, and never
 *   retries on its own.
 */
import tls from 'node:tls';
import {
  type IClientOptions,
  type IClientPublishOptions,
  type IClientSubscribeOptions,
  type IPublishPacket,
  MqttClient,
} from 'mqtt';
import { Backoff, type BackoffOptions } from './backoff.js';
import type { Credential, CredentialStore } from './credentials.js';
import {
  BrokerRefusedError,
  CaMismatchError,
  DeviceClientError,
  describeCause,
  isCaVerificationError,
  isNetworkError,
  ServerUnreachableError,
} from './errors.js';
import { TypedEmitter } from './events.js';
import type { DeviceKey } from './keys/types.js';
import { parseUrl } from './options.js';
import type { RevocationCheck } from './revocation.js';
import { clientContext } from './tls-context.js';

export interface SessionCredential {
  credential: Credential;
  key: DeviceKey;
}

export interface ConnectedEvent {
  /** The TLS session was resumed (abbreviated handshake), from `TLSSocket.isSessionReused()`. */
  resumed: boolean;
  /** Serial (hex) of the certificate this connection authenticated with. */
  serial: string;
  broker: string;
  /** TLS protocol negotiated, e.g. TLSv1.3. */
  protocol: string | null;
}

export interface DisconnectedEvent {
  /** Why, when known (network error, refusal). */
  error?: DeviceClientError;
  /** Next attempt in this many ms; absent when the session stopped. */
  reconnectInMs?: number;
}

export interface RevokedEvent {
  serial: string;
  error: BrokerRefusedError;
}

export interface MqttSessionEvents {
  connected: (e: ConnectedEvent) => void;
  disconnected: (e: DisconnectedEvent) => void;
  revoked: (e: RevokedEvent) => void;
  /** Every reported failure; `fatal` ones stop the session. */
  error: (error: DeviceClientError, fatal: boolean) => void;
  message: (topic: string, payload: Buffer, packet: IPublishPacket) => void;
  /** The session stopped for good (close() or a fatal error). */
  stopped: (e: { error?: DeviceClientError }) => void;
}

export interface MqttSessionOptions {
  /** mqtts://host:port */
  url: string;
  /** Pinned CA bundle (PEM). */
  ca: string | Buffer;
  deviceId: string;
  credential: SessionCredential;
  /** Where tickets are persisted; omit to keep them in memory only. */
  store?: CredentialStore;
  /** TLS server name (SNI and certificate check); default: the URL host. */
  servername?: string;
  backoff?: BackoffOptions;
  /** MQTT keepalive in seconds (default 60). */
  keepalive?: number;
  /** CONNACK deadline in ms (default 30 000). */
  connectTimeoutMs?: number;
  /** MQTT protocol version (default 5 = MQTT 5.0; 4 = 3.1.1). */
  protocolVersion?: 4 | 5;
  /** Clean session (default true). */
  clean?: boolean;
  /** Asked when the broker refuses us; true = revoked. Default: none (refusals report NOT_AUTHORIZED). */
  revocationCheck?: RevocationCheck;
  /** Minimum TLS version (default TLSv1.2). */
  minVersion?: tls.SecureVersion;
}

type State = 'idle' | 'connecting' | 'connected' | 'waiting' | 'stopped';

interface Switch {
  previous: SessionCredential;
  resolve: () => void;
  reject: (e: DeviceClientError) => void;
}

// 3.1.1 return codes 4 and 5 (3.2.2.3); 5.0 reason codes 0x85 client identifier not valid (the
// broker binds it to the certificate), 0x86, 0x87, 0x8A banned, 0x8C (3.2.2.2).
const CONNACK_AUTH_CODES = new Set([4, 5, 0x85, 0x86, 0x87, 0x8a, 0x8c]);
const CONNACK_RETRY_CODES = new Set([3, 0x88, 0x89, 0x97, 0x9f]);

export class MqttSession extends TypedEmitter<MqttSessionEvents> {
  readonly broker: string;
  private readonly url: URL;
  private readonly host: string;
  private cred: SessionCredential;
  private secureContext: tls.SecureContext;
  private tlsSession: Buffer | undefined;
  private client: MqttClient | undefined;
  private state: State = 'idle';
  private readonly backoff: Backoff;
  private timer: NodeJS.Timeout | undefined;
  private lastStreamError: Error | undefined;
  private refusal: DeviceClientError | undefined;
  private pendingSwitch: Switch | undefined;
  private firstConnect: { resolve: (e: ConnectedEvent) => void; reject: (e: DeviceClientError) => void } | undefined;
  private persistChain: Promise<void> = Promise.resolve();
  private fatal: DeviceClientError | undefined;

  constructor(private readonly opts: MqttSessionOptions) {
    super();
    this.url = parseUrl(opts.url, 'mqttUrl');
    if (this.url.protocol !== 'mqtts:')
      throw new DeviceClientError('INVALID_OPTIONS', `the MQTT URL must be mqtts://, got ${opts.url}`);
    // URL.hostname keeps an IPv6 literal's brackets ([::1]); sockets and SNI want it bare.
    this.host = this.url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.broker = `${this.url.hostname}:${this.url.port || '8883'}`;
    this.backoff = new Backoff(opts.backoff);
    this.cred = opts.credential;
    this.secureContext = this.buildContext(this.cred);
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  get credential(): Credential {
    return this.cred.credential;
  }

  /** The error that stopped the session, if one did. */
  get stopError(): DeviceClientError | undefined {
    return this.fatal;
  }

  /** Connects; resolves at the first CONNACK accepted, rejects on a fatal error. Retries the rest. */
  async start(): Promise<ConnectedEvent> {
    if (this.state !== 'idle') throw new DeviceClientError('INVALID_OPTIONS', 'the session was already started');
    this.tlsSession = await this.opts.store?.loadSession(this.cred.credential.fingerprint, this.broker);
    const first = new Promise<ConnectedEvent>((resolve, reject) => {
      this.firstConnect = { resolve, reject };
    });
    const options: IClientOptions = {
      clientId: this.opts.deviceId,
      protocolVersion: this.opts.protocolVersion ?? 5,
      clean: this.opts.clean ?? true,
      keepalive: this.opts.keepalive ?? 60,
      connectTimeout: this.opts.connectTimeoutMs ?? 30_000,
      reconnectPeriod: 0,
      queueQoSZero: true,
      resubscribe: true,
      manualConnect: true,
    };
    const client = new MqttClient(() => this.openStream(), options);
    this.client = client;
    client.on('connect', () => this.onConnack());
    client.on('close', () => this.onClose());
    client.on('error', (e) => this.onClientError(e));
    client.on('message', (topic, payload, packet) => this.emit('message', topic, payload, packet));
    this.state = 'connecting';
    client.connect();
    return first;
  }

  publish(topic: string, payload: string | Buffer, opts: IClientPublishOptions = {}): Promise<void> {
    const client = this.requireClient();
    return new Promise((resolve, reject) => {
      client.publish(topic, payload, opts, (err) => (err ? reject(this.wrap(err)) : resolve()));
    });
  }

  subscribe(topic: string | string[], opts: IClientSubscribeOptions = { qos: 1 }): Promise<void> {
    const client = this.requireClient();
    return new Promise((resolve, reject) => {
      client.subscribe(topic, opts, (err, granted) => {
        if (err) return reject(this.wrap(err));
        // 3.1.1 refuses with 0x80 (3.9.3); 5.0 with any reason code from 0x80 up (0x87, 0x9E, ...).
        const refused = granted?.find((g) => g.qos >= 0x80);
        if (refused)
          return reject(
            new BrokerRefusedError('NOT_AUTHORIZED', `subscription to ${refused.topic} refused`, refused.qos),
          );
        resolve();
      });
    });
  }

  /** Messages waiting in MQTT.js's queues (offline QoS 0 plus unacknowledged QoS >= 1). */
  get queued(): number {
    const c = this.client as unknown as
      | {
          queue?: unknown[];
          outgoing?: Record<string, unknown>;
          outgoingStore?: { _inflights?: Map<unknown, unknown> };
        }
      | undefined;
    return (c?.queue?.length ?? 0) + (c?.outgoingStore?._inflights?.size ?? 0);
  }

  /**
   * Reconnects with another credential (a renewal). Resolves once the broker accepted it; on a
   * refusal the session goes back to the previous credential and the promise rejects. Messages
   * queued meanwhile are kept and delivered on the new connection.
   */
  switchCredential(next: SessionCredential): Promise<void> {
    if (this.state === 'stopped') return Promise.reject(new DeviceClientError('CLIENT_STOPPED', 'session stopped'));
    if (this.pendingSwitch) return Promise.reject(new DeviceClientError('INVALID_OPTIONS', 'a switch is under way'));
    const context = this.buildContext(next);
    return new Promise<void>((resolve, reject) => {
      this.pendingSwitch = { previous: this.cred, resolve, reject };
      this.cred = next;
      this.secureContext = context;
      this.tlsSession = undefined; // a session of the old certificate would present the old identity
      this.reconnectNow();
    });
  }

  /**
   * The device learned otherwise (its renewal was refused) that it is revoked: report it and stop
   * the way a refusal by the broker does (`revoked`, then a fatal DEVICE_REVOKED).
   */
  stopRevoked(error: BrokerRefusedError): void {
    if (this.state === 'stopped') return;
    this.emit('revoked', { serial: this.cred.credential.serial, error });
    this.stop(error);
  }

  /** Disconnects and stops. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'stopped') return;
    // Only an established connection ends gracefully (in-flight messages, then DISCONNECT). One
    // still being made (a reconnect, a renewal's switch) is cut: MQTT.js would otherwise handle
    // its CONNACK after closing its stores, a TypeError in Store.createStream nobody can catch.
    const graceful = this.state === 'connected';
    this.stop(undefined);
    const client = this.client;
    if (client) await new Promise<void>((resolve) => client.end(!graceful, {}, () => resolve()));
    await this.persistChain;
  }

  /** Drops the connection (like a network cut) and reconnects through the normal path. */
  reconnectNow(): void {
    if (this.state === 'stopped') return;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.reconnect();
      return;
    }
    const stream = this.client?.stream as tls.TLSSocket | undefined;
    this.backoff.reset();
    this.immediate = true;
    if (stream && !stream.destroyed) stream.destroy();
    else if (this.state !== 'connecting') this.reconnect();
  }

  private immediate = false;

  private requireClient(): MqttClient {
    if (!this.client || this.state === 'stopped')
      throw new DeviceClientError('CLIENT_STOPPED', 'the MQTT session is not running');
    return this.client;
  }

  private buildContext(c: SessionCredential): tls.SecureContext {
    return clientContext(c.key, c.credential.certificatePem, c.credential.chainPem, this.opts.ca, this.opts.minVersion);
  }

  private openStream(): tls.TLSSocket {
    this.lastStreamError = undefined;
    const fingerprint = this.cred.credential.fingerprint;
    const socket = tls.connect({
      host: this.host,
      port: Number(this.url.port || 8883),
      servername: this.opts.servername ?? (isIp(this.host) ? undefined : this.host),
      secureContext: this.secureContext,
      rejectUnauthorized: true,
      ...(this.tlsSession ? { session: this.tlsSession } : {}),
    });
    socket.setNoDelay(true);
    socket.on('session', (session: Buffer) => {
      // Only a ticket for the credential in use; a late ticket of a replaced one is dropped.
      if (this.cred.credential.fingerprint !== fingerprint) return;
      this.tlsSession = session;
      this.persistSession(fingerprint, session);
    });
    socket.on('error', (e) => {
      this.lastStreamError = e;
    });
    return socket;
  }

  private persistSession(fingerprint: string, session: Buffer): void {
    const store = this.opts.store;
    if (!store) return;
    this.persistChain = this.persistChain
      .then(() => store.saveSession({ fingerprint, broker: this.broker, session }))
      .catch((e) => {
        this.emit(
          'error',
          new DeviceClientError('CREDENTIAL_CORRUPT', `cannot save the TLS session: ${describeCause(e)}`),
          false,
        );
      });
  }

  private onConnack(): void {
    const stream = this.client?.stream as tls.TLSSocket;
    const event: ConnectedEvent = {
      resumed: stream.isSessionReused(),
      serial: this.cred.credential.serial,
      broker: this.broker,
      protocol: stream.getProtocol(),
    };
    this.state = 'connected';
    this.backoff.reset();
    this.refusal = undefined;
    const sw = this.pendingSwitch;
    this.pendingSwitch = undefined;
    sw?.resolve();
    this.emit('connected', event);
    const first = this.firstConnect;
    this.firstConnect = undefined;
    first?.resolve(event);
  }

  private onClientError(e: Error & { code?: unknown }): void {
    if (typeof e.code === 'number') {
      // CONNACK refusal (MQTT.js ErrorWithReasonCode).
      const rc = e.code;
      if (CONNACK_RETRY_CODES.has(rc)) {
        this.refusal = new DeviceClientError('SERVER_ERROR', `broker busy or unavailable (CONNACK ${rc})`);
      } else if (CONNACK_AUTH_CODES.has(rc)) {
        this.refusal = new BrokerRefusedError('NOT_AUTHORIZED', `the broker refused this device: ${e.message}`, rc);
      } else {
        this.refusal = new BrokerRefusedError(
          'CONNECTION_REFUSED',
          `the broker refused the connection: ${e.message}`,
          rc,
        );
      }
      // MQTT.js has cleaned up without closing the socket; close it so onClose decides.
      (this.client?.stream as tls.TLSSocket | undefined)?.destroy();
      return;
    }
    this.lastStreamError ??= e;
  }

  private classify(e: Error | undefined): DeviceClientError | undefined {
    if (!e) return undefined;
    if (e instanceof DeviceClientError) return e;
    const code = String((e as NodeJS.ErrnoException).code ?? '');
    if (isCaVerificationError(e)) return new CaMismatchError(this.broker, { cause: e });
    if (/ALERT_CERTIFICATE_REVOKED/.test(code))
      return new BrokerRefusedError('DEVICE_REVOKED', 'the broker says this certificate is revoked', undefined, {
        cause: e,
      });
    if (
      /ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_EXPIRED|CERTIFICATE_UNKNOWN|ACCESS_DENIED|CERTIFICATE_REQUIRED)/.test(
        code,
      )
    )
      return new BrokerRefusedError('NOT_AUTHORIZED', `the broker refused our certificate (${code})`, undefined, {
        cause: e,
      });
    if (isNetworkError(e)) return new ServerUnreachableError(`mqtts://${this.broker}`, { cause: e });
    return new ServerUnreachableError(`mqtts://${this.broker}`, { cause: e });
  }

  private onClose(): void {
    if (this.state === 'stopped') return;
    const wasConnected = this.state === 'connected';
    const error = this.refusal ?? this.classify(this.lastStreamError);
    this.refusal = undefined;
    this.lastStreamError = undefined;
    this.state = 'waiting';
    if (error instanceof BrokerRefusedError || error instanceof CaMismatchError) {
      void this.handleRefusal(error);
      return;
    }
    if (!wasConnected && !error && !this.immediate) {
      // Closed after the TLS handshake and before CONNACK, without a word: ask the CRL.
      void this.maybeRevoked().then((revoked) => {
        if (this.state === 'stopped') return;
        if (revoked) return this.handleRefusal(revoked);
        this.scheduleReconnect(error);
      });
      return;
    }
    this.scheduleReconnect(error);
  }

  private async maybeRevoked(): Promise<BrokerRefusedError | undefined> {
    const check = this.opts.revocationCheck;
    if (!check) return undefined;
    const revoked = await check(this.cred.credential);
    return revoked
      ? new BrokerRefusedError('DEVICE_REVOKED', `certificate ${this.cred.credential.serial} is revoked (CRL)`)
      : undefined;
  }

  private async handleRefusal(error: BrokerRefusedError | CaMismatchError): Promise<void> {
    let final: DeviceClientError = error;
    if (error instanceof BrokerRefusedError && error.code !== 'DEVICE_REVOKED')
      final = (await this.maybeRevoked()) ?? error;
    if (this.state === 'stopped') return;
    const sw = this.pendingSwitch;
    if (sw) {
      // The new credential was refused: go back to the one that worked and report.
      this.pendingSwitch = undefined;
      this.cred = sw.previous;
      this.secureContext = this.buildContext(sw.previous);
      this.tlsSession = await this.opts.store?.loadSession(sw.previous.credential.fingerprint, this.broker);
      sw.reject(final);
      this.scheduleReconnect(final);
      return;
    }
    if (final.code === 'DEVICE_REVOKED' && final instanceof BrokerRefusedError)
      this.emit('revoked', { serial: this.cred.credential.serial, error: final });
    this.stop(final);
  }

  private scheduleReconnect(error: DeviceClientError | undefined): void {
    if (this.state === 'stopped') return;
    const delay = this.immediate ? 0 : this.backoff.next();
    this.immediate = false;
    this.state = 'waiting';
    if (error) this.emit('error', error, false);
    this.emit('disconnected', { ...(error ? { error } : {}), reconnectInMs: delay });
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.reconnect();
    }, delay);
  }

  private reconnect(): void {
    const client = this.client;
    if (!client || this.state === 'stopped') return;
    this.state = 'connecting';
    // Keep the stores: MQTT.js replaces them (dropping queued messages) unless handed back.
    client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore });
  }

  private stop(error: DeviceClientError | undefined): void {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    this.fatal = error;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const sw = this.pendingSwitch;
    this.pendingSwitch = undefined;
    sw?.reject(error ?? new DeviceClientError('CLIENT_STOPPED', 'session stopped'));
    if (error) {
      this.emit('error', error, true);
      this.client?.end(true);
    }
    this.emit('disconnected', error ? { error } : {});
    this.emit('stopped', error ? { error } : {});
    const first = this.firstConnect;
    this.firstConnect = undefined;
    first?.reject(error ?? new DeviceClientError('CLIENT_STOPPED', 'session closed before it connected'));
  }

  private wrap(e: Error): DeviceClientError {
    if (e instanceof DeviceClientError) return e;
    // MQTT 5.0 says no on the acknowledgement: PUBACK/PUBREC with a reason code from 0x80 up
    // (MQTT.js puts it in `code`, 3.4.2.1), or a SUBACK (on `packet.granted`, 3.9.3).
    const code = (e as { code?: unknown }).code;
    const granted = (e as { packet?: { granted?: unknown } }).packet?.granted;
    const suback = Array.isArray(granted) ? granted.find((g) => typeof g === 'number' && g >= 0x80) : undefined;
    const rc = typeof code === 'number' && code >= 0x80 ? code : (suback as number | undefined);
    if (rc !== undefined)
      return new BrokerRefusedError('NOT_AUTHORIZED', `the broker refused it (reason code ${rc}): ${e.message}`, rc, {
        cause: e,
      });
    return new DeviceClientError('CLIENT_STOPPED', e.message, { cause: e });
  }
}

function isIp(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(':');
}
