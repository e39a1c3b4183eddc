/**
 * DeviceClient: the one object a device embeds. Enrollment (EST simpleenroll with the factory
 * token), the credential directory, the MQTT session and automatic renewal (EST simplereenroll
 * with a new key at a fraction of the certificate lifetime).
 */
import type { IClientPublishOptions, IClientSubscribeOptions, IPublishPacket } from 'mqtt';
import { Backoff, type BackoffOptions } from './backoff.js';
import { type Credential, CredentialStore, credentialFrom } from './credentials.js';
import { createCsrWithEvidence } from './csr-evidence.js';
import {
  BrokerRefusedError,
  CertificateVerificationError,
  CredentialError,
  DeviceClientError,
  KeyStoreError,
  RenewalError,
} from './errors.js';
import { EstClient } from './est.js';
import { TypedEmitter } from './events.js';
import { Pkcs11KeyStore, type Pkcs11KeyStoreOptions } from './keys/pkcs11.js';
import { SoftwareKeyStore } from './keys/software.js';
import { TpmKeyStore, type TpmKeyStoreOptions } from './keys/tpm.js';
import type { DeviceKey, KeyStore } from './keys/types.js';
import { type ConnectedEvent, type DisconnectedEvent, MqttSession, type RevokedEvent } from './mqtt-session.js';
import { checkClientOptions } from './options.js';
import { crlRevocationCheck } from './revocation.js';
import { createCsr, parseCertificates, verifyIssuedCertificate, x509 } from './x509.js';

export type KeyStoreConfig =
  | { type: 'software' }
  | ({ type: 'pkcs11' } & Pkcs11KeyStoreOptions)
  | ({ type: 'tpm' } & TpmKeyStoreOptions);

export interface RenewalOptions {
  /** Renew automatically while connected (default true). */
  auto?: boolean;
  /** Fraction of the certificate lifetime after which to renew (default 2/3). */
  fraction?: number;
  /** Backoff between failed renewal attempts (default 5 s .. 1 h). */
  retry?: BackoffOptions;
}

export interface DeviceClientOptions {
  deviceId: string;
  /** Credential directory (created 0700). */
  credentialDir: string;
  /** Pinned CA bundle (PEM, root + issuing CA, as `fleetgate ca export` prints). */
  ca: string | Buffer;
  /** Server base URL for EST, e.g. https://fleetgate.example:8443 */
  estUrl: string;
  /** Broker URL, e.g. mqtts://fleetgate.example:8883 (needed for connect()). */
  mqttUrl?: string;
  /** Where keys live (default: software keys in the credential directory). */
  keyStore?: KeyStore | KeyStoreConfig;
  renewal?: RenewalOptions;
  /** Backoff between reconnect attempts (default 1 s .. 60 s, jittered). */
  reconnect?: BackoffOptions;
  mqtt?: {
    keepalive?: number;
    connectTimeoutMs?: number;
    protocolVersion?: 4 | 5;
    clean?: boolean;
    servername?: string;
  };
  /** Deadline of one EST request (default 30 s). */
  estTimeoutMs?: number;
}

export interface RenewedEvent {
  serial: string;
  previousSerial: string;
  notAfter: Date;
}

export interface DeviceClientEvents {
  connected: (e: ConnectedEvent) => void;
  disconnected: (e: DisconnectedEvent) => void;
  revoked: (e: RevokedEvent) => void;
  renewed: (e: RenewedEvent) => void;
  /** Every reported failure; `fatal` ones stopped the MQTT session. */
  error: (error: DeviceClientError, fatal: boolean) => void;
  message: (topic: string, payload: Buffer, packet: IPublishPacket) => void;
  stopped: (e: { error?: DeviceClientError }) => void;
}

/** When a certificate valid from notBefore to notAfter should be renewed. */
export function renewalDueAt(c: { notBefore: Date; notAfter: Date }, fraction = 2 / 3): Date {
  const f = Math.min(0.999, Math.max(0.0001, fraction));
  const from = c.notBefore.getTime();
  return new Date(from + (c.notAfter.getTime() - from) * f);
}

const MAX_TIMER = 2 ** 31 - 1;

export class DeviceClient extends TypedEmitter<DeviceClientEvents> {
  readonly deviceId: string;
  readonly store: CredentialStore;
  readonly keyStore: KeyStore;
  readonly est: EstClient;
  private readonly trusted: x509.X509Certificate[];
  private session: MqttSession | undefined;
  private current: { credential: Credential; key: DeviceKey } | undefined;
  private renewing: Promise<Credential> | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: DeviceClientOptions) {
    super();
    checkClientOptions(opts);
    this.deviceId = opts.deviceId;
    this.store = new CredentialStore(opts.credentialDir);
    this.keyStore = makeKeyStore(opts.keyStore, opts.credentialDir);
    this.est = new EstClient({ url: opts.estUrl, ca: opts.ca, timeoutMs: opts.estTimeoutMs });
    try {
      this.trusted = parseCertificates(opts.ca);
    } catch (e) {
      throw new DeviceClientError('INVALID_OPTIONS', `the pinned CA bundle is not valid PEM: ${String(e)}`, {
        cause: e,
      });
    }
    if (this.trusted.length === 0)
      throw new DeviceClientError('INVALID_OPTIONS', 'the pinned CA bundle holds no PEM certificate');
  }

  /**
   * Enrolls with a one-time factory token: new key, CSR (CN = device id), EST simpleenroll,
   * checks the certificate (pinned CA chain, our key, our CN), then writes the credential in one
   * atomic rename. Refuses (ALREADY_ENROLLED) when a usable credential exists unless
   * `replace: true`; a missing, corrupt or expired one is simply replaced.
   */
  async enroll(token: string, options: { replace?: boolean } = {}): Promise<Credential> {
    await this.store.init();
    let previous: Credential | undefined;
    let usable = false;
    // A credential file that cannot be ours (corrupt, or another device's) is moved aside, not
    // overwritten: the new enrollment replaces it and nothing is lost (another device's key stays).
    let setAside = false;
    try {
      previous = await this.store.load();
      if (previous.deviceId !== this.deviceId) {
        previous = undefined;
        setAside = true;
      } else {
        await this.keyStore.load(previous.key);
        usable = previous.notAfter > new Date();
      }
    } catch (e) {
      // Missing or corrupt credential, or its key is gone: nothing to protect. A token problem
      // (module, PIN) is reported as such.
      if (e instanceof KeyStoreError && e.code !== 'KEY_INVALID' && e.code !== 'PKCS11_KEY_NOT_FOUND') throw e;
      if (e instanceof CredentialError && e.code === 'CREDENTIAL_CORRUPT') setAside = true;
    }
    if (previous && usable && !options.replace)
      throw new CredentialError(
        'ALREADY_ENROLLED',
        this.store.dir,
        `device ${this.deviceId} already holds a valid certificate (serial ${previous.serial}); pass replace: true to enroll again`,
      );
    const key = await this.keyStore.generate({ deviceId: this.deviceId });
    let credential: Credential;
    try {
      // A key store that can prove where its key lives (TPM) attests it first: the evidence,
      // bound to a nonce the server handed out for this token and device, goes into the CSR.
      const evidence =
        this.keyStore.attest && this.keyStore.attests !== false
          ? await this.keyStore.attest(key, this.est.attestationExchange(this.deviceId, token))
          : undefined;
      const csr = evidence
        ? await createCsrWithEvidence(this.deviceId, key, evidence)
        : await createCsr(this.deviceId, key);
      const der = await this.est.simpleEnroll(this.deviceId, token, csr);
      const { cert, chain } = await this.verifyIssued(der, key);
      credential = credentialFrom(this.deviceId, cert, chain, key.ref);
      if (setAside) await this.store.quarantine();
      await this.store.save(credential);
    } catch (e) {
      await this.keyStore.remove(key.ref).catch(() => undefined);
      throw e;
    }
    await this.store.discardPending();
    await this.store.clearSession();
    if (previous && previous.key.type === key.ref.type) await this.keyStore.remove(previous.key).catch(() => undefined);
    return credential;
  }

  /**
   * Checks a certificate EST returned (verifyIssuedCertificate). After an issuing-CA rollover the
   * new issuing CA is not in a bundle pinned before it: its certificate then comes from EST
   * /cacerts (RFC 7030 4.1, fetched over the TLS connection the pinned bundle authenticates) as
   * an untrusted intermediate; the path must still end at a pinned root. The credential keeps the
   * chain it verified (issuing CA first), so the broker gets the new chain with no operator step.
   */
  private async verifyIssued(
    der: Uint8Array,
    key: DeviceKey,
  ): Promise<{ cert: x509.X509Certificate; chain: x509.X509Certificate[] }> {
    try {
      return await verifyIssuedCertificate(der, { deviceId: this.deviceId, key, trusted: this.trusted });
    } catch (e) {
      if (!(e instanceof CertificateVerificationError) || e.reason !== 'issuer-unknown') throw e;
      const intermediates: x509.X509Certificate[] = [];
      for (const c of await this.est.cacerts()) {
        try {
          intermediates.push(new x509.X509Certificate(c));
        } catch {
          // Not a certificate: useless as a path candidate, and the path check decides anyway.
        }
      }
      return verifyIssuedCertificate(der, { deviceId: this.deviceId, key, trusted: this.trusted, intermediates });
    }
  }

  /** The stored credential, checked: CREDENTIAL_MISSING / CREDENTIAL_CORRUPT / CERT_EXPIRED. */
  async credential(now = new Date()): Promise<Credential> {
    const c = await this.store.load();
    if (c.deviceId !== this.deviceId)
      throw new CredentialError(
        'CREDENTIAL_CORRUPT',
        this.store.dir,
        `the stored credential belongs to ${c.deviceId}, not ${this.deviceId}`,
      );
    if (c.notAfter <= now)
      throw new CredentialError(
        'CERT_EXPIRED',
        this.store.dir,
        `the device certificate (serial ${c.serial}) expired at ${c.notAfter.toISOString()}: enroll again with a new factory token`,
      );
    return c;
  }

  /**
   * The credential to use: the current one or, when it has expired and a renewal written before a
   * restart is still valid, that renewal, promoted now (README "Renewal"). It was checked against
   * the pinned CA when it was issued; the broker's confirmation would only protect an old
   * certificate that can no longer be used anyway.
   */
  private async usableCredential(): Promise<Credential> {
    try {
      return await this.credential();
    } catch (e) {
      if (!(e instanceof CredentialError) || e.code !== 'CERT_EXPIRED') throw e;
      const pending = await this.store.loadPending();
      if (!pending || pending.deviceId !== this.deviceId || pending.notAfter <= new Date()) throw e;
      try {
        await this.keyStore.load(pending.key);
      } catch {
        throw e;
      }
      const old = await this.store.load();
      await this.store.promotePending();
      await this.store.clearSession();
      if (JSON.stringify(old.key) !== JSON.stringify(pending.key))
        await this.keyStore.remove(old.key).catch(() => undefined);
      return pending;
    }
  }

  /**
   * Connects to the broker with the stored credential; resolves at the first accepted CONNACK.
   * Network failures are retried with backoff (and reported as `error`, non-fatal); refusals,
   * revocation and a wrong pinned CA reject and stop.
   */
  async connect(): Promise<ConnectedEvent> {
    if (this.closed) throw new DeviceClientError('CLIENT_STOPPED', 'the client was closed');
    if (this.session && !this.session.stopError)
      throw new DeviceClientError('INVALID_OPTIONS', 'already connected or connecting');
    if (!this.opts.mqttUrl) throw new DeviceClientError('INVALID_OPTIONS', 'mqttUrl is required to connect');
    await this.store.init();
    const credential = await this.usableCredential();
    const key = await this.loadKey(credential);
    this.current = { credential, key };
    const session = new MqttSession({
      url: this.opts.mqttUrl,
      ca: this.opts.ca,
      deviceId: this.deviceId,
      credential: this.current,
      store: this.store,
      backoff: this.opts.reconnect,
      revocationCheck: crlRevocationCheck(this.opts.ca),
      ...this.opts.mqtt,
    });
    this.session = session;
    session.on('connected', (e) => this.emit('connected', e));
    session.on('disconnected', (e) => this.emit('disconnected', e));
    session.on('revoked', (e) => this.emit('revoked', e));
    session.on('error', (e, fatal) => this.emit('error', e, fatal));
    session.on('message', (t, p, packet) => this.emit('message', t, p, packet));
    session.on('stopped', (e) => {
      this.clearRenewTimer();
      this.emit('stopped', e);
    });
    const connected = await session.start();
    await this.adoptPending();
    this.scheduleRenewal();
    return connected;
  }

  publish(topic: string, payload: string | Buffer, opts: IClientPublishOptions = { qos: 1 }): Promise<void> {
    return this.requireSession().publish(topic, payload, opts);
  }

  subscribe(topic: string | string[], opts: IClientSubscribeOptions = { qos: 1 }): Promise<void> {
    return this.requireSession().subscribe(topic, opts);
  }

  /** Messages MQTT.js holds until the broker takes them. */
  get queued(): number {
    return this.session?.queued ?? 0;
  }

  get connected(): boolean {
    return this.session?.connected ?? false;
  }

  /** Drops the MQTT connection and reconnects at once (tests, network changes). */
  reconnect(): void {
    this.requireSession().reconnectNow();
  }

  /**
   * Renews now: new key, EST simplereenroll authenticated by the current certificate, verify,
   * keep as pending, reconnect with it, and only when the broker accepts it make it current and
   * destroy the old key. Any failure leaves the old credential in place.
   */
  renew(): Promise<Credential> {
    this.renewing ??= this.renewOnce().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.clearRenewTimer();
    await this.session?.close();
    await this.keyStore.close();
  }

  private requireSession(): MqttSession {
    if (!this.session) throw new DeviceClientError('CLIENT_STOPPED', 'not connected: call connect() first');
    return this.session;
  }

  private async loadKey(c: Credential): Promise<DeviceKey> {
    try {
      return await this.keyStore.load(c.key);
    } catch (e) {
      if (e instanceof KeyStoreError && e.code === 'KEY_INVALID')
        throw new CredentialError(
          'CREDENTIAL_CORRUPT',
          this.store.dir,
          `the device key is unusable (${e.message}): enroll again with a factory token`,
          { cause: e },
        );
      throw e;
    }
  }

  /** A renewal that was written but not confirmed before a restart: confirm it now. */
  private async adoptPending(): Promise<void> {
    const pending = await this.store.loadPending();
    if (!pending || !this.current || !this.session) return;
    if (pending.deviceId !== this.deviceId || pending.notAfter <= new Date()) {
      await this.store.discardPending();
      return;
    }
    try {
      const key = await this.keyStore.load(pending.key);
      await this.confirm({ credential: pending, key });
    } catch (e) {
      await this.store.discardPending();
      this.emit('error', asDeviceError(e), false);
    }
  }

  private async renewOnce(): Promise<Credential> {
    if (this.closed) throw new DeviceClientError('CLIENT_STOPPED', 'the client was closed');
    if (!this.current) {
      await this.store.init();
      const credential = await this.usableCredential();
      this.current = { credential, key: await this.loadKey(credential) };
    }
    const old = this.current;
    // The identity every request of this renewal presents: the current certificate and its key
    // (for a token key, OpenSSL's pkcs11 engine signs the handshake in the token).
    const client = { certPem: old.credential.certificatePem, chainPem: old.credential.chainPem, key: old.key };
    const key = await this.keyStore.generate({ deviceId: this.deviceId });
    let next: Credential;
    try {
      // A key store that can prove where its keys live (TPM) attests the new key exactly as at
      // enrollment, with the two attest round trips authenticated by the current certificate
      // (docs/attestation.md "Renewal"): the server keeps `tpm-attested` only with evidence made
      // for this renewal, and refuses a tpm-attested device's renewal without it. A failure here
      // is final for this attempt (TpmError with its step, or the server's TPM_* code): never a
      // fallback to a CSR without evidence, which would be refused or silently downgraded.
      const evidence =
        this.keyStore.attest && this.keyStore.attests !== false
          ? await this.keyStore.attest(key, this.est.renewalAttestationExchange(client))
          : undefined;
      const csr = evidence
        ? await createCsrWithEvidence(this.deviceId, key, evidence)
        : await createCsr(this.deviceId, key);
      const der = await this.est.simpleReenroll(csr, client);
      const { cert, chain } = await this.verifyIssued(der, key);
      next = credentialFrom(this.deviceId, cert, chain, key.ref);
      await this.store.savePending(next);
    } catch (e) {
      await this.keyStore.remove(key.ref).catch(() => undefined);
      throw e;
    }
    await this.confirm({ credential: next, key });
    return next;
  }

  /** Switches the session to `next`; on acceptance promotes it and destroys the old key. */
  private async confirm(next: { credential: Credential; key: DeviceKey }): Promise<void> {
    const old = this.current;
    const session = this.session;
    if (session && !session.stopError) {
      try {
        await session.switchCredential(next);
      } catch (e) {
        await this.store.discardPending();
        await this.keyStore.remove(next.key.ref).catch(() => undefined);
        throw e;
      }
    }
    await this.store.promotePending();
    this.current = next;
    if (old && JSON.stringify(old.credential.key) !== JSON.stringify(next.credential.key))
      await this.keyStore.remove(old.credential.key).catch(() => undefined);
    this.emit('renewed', {
      serial: next.credential.serial,
      previousSerial: old?.credential.serial ?? '',
      notAfter: next.credential.notAfter,
    });
    this.scheduleRenewal();
  }

  private clearRenewTimer(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = undefined;
  }

  private scheduleRenewal(): void {
    this.clearRenewTimer();
    if (this.closed || this.opts.renewal?.auto === false || !this.current) return;
    const due = renewalDueAt(this.current.credential, this.opts.renewal?.fraction);
    this.sleepUntil(due, () => void this.autoRenew());
  }

  private sleepUntil(when: Date, then: () => void): void {
    const wait = when.getTime() - Date.now();
    this.renewTimer = setTimeout(
      () => (wait > MAX_TIMER ? this.sleepUntil(when, then) : then()),
      Math.max(0, Math.min(wait, MAX_TIMER)),
    );
    this.renewTimer.unref?.();
  }

  /** Renewal with retries until it works or the certificate expires; every failure is reported. */
  private async autoRenew(): Promise<void> {
    const backoff = new Backoff({ initialMs: 5_000, maxMs: 3_600_000, ...this.opts.renewal?.retry });
    for (;;) {
      if (this.closed || !this.current || this.session?.stopError) return;
      const expiresAt = this.current.credential.notAfter;
      try {
        await this.renew();
        return;
      } catch (e) {
        const cause = asDeviceError(e);
        this.emit('error', new RenewalError(expiresAt, backoff.attempts + 1, { cause }), false);
        // A decommissioned device's certificates are revoked too (cessationOfOperation), so its
        // session stops as a revoked one does.
        if (cause.code === 'DEVICE_REVOKED' || cause.code === 'DEVICE_DECOMMISSIONED') {
          const error = new BrokerRefusedError('DEVICE_REVOKED', cause.message, undefined, { cause });
          if (this.session) this.session.stopRevoked(error);
          else this.emit('revoked', { serial: this.current.credential.serial, error });
          return;
        }
        if (cause.code === 'CLIENT_STOPPED') return;
        const left = expiresAt.getTime() - Date.now();
        if (left <= 0) return;
        // A final answer (see FINAL_RENEWAL_CODES) is asked again only at the backoff's ceiling:
        // no retry soon can change it, but an operator can (a manufacturer CA added, a device
        // re-provisioned), and a device that is never restarted must not expire for that. The
        // current certificate stays good meanwhile, so the session goes on.
        const delay = FINAL_RENEWAL_CODES.has(cause.code) ? backoff.nextAtCeiling() : backoff.next();
        const wait = Math.min(delay, Math.max(1_000, left / 2));
        await new Promise<void>((resolve) => {
          this.renewTimer = setTimeout(resolve, wait);
          this.renewTimer.unref?.();
        });
      }
    }
  }
}

/**
 * Renewal failures that retrying soon cannot cure. The automatic renewal does not ask again
 * with its short backoff after them (the error event has reported each):
 * - the device is revoked or decommissioned, or the client was closed: it stops for good;
 * - attestation answers that depend only on things that stay the same from one attempt to the
 *   next (docs/attestation.md "What the server checks"): the device must attest and this key
 *   store does not (ATTESTATION_REQUIRED), the TPM's EK certificate is not from a configured
 *   manufacturer or attestation is off (TPM_EK_UNTRUSTED), the AK or the key does not have the
 *   attributes the server requires (TPM_ATTESTATION_INVALID, TPM_KEY_NOT_RESIDENT), the evidence
 *   does not parse (TPM_EVIDENCE_MALFORMED), and on the device the TPM has no EK certificate or
 *   the tools are missing (TPM_EK_CERT_MISSING, TPM_TOOLS_MISSING). Only an operator's act (or a
 *   device update) changes these, so they are asked again at the backoff's ceiling (default
 *   1 h, never past half the remaining lifetime) until the certificate expires.
 * Retried with the backoff: whatever involves this attempt's fresh challenge, nonce or TPM state
 * (TPM_ACTIVATION_FAILED, TPM_CHALLENGE_INVALID, TPM_SIGNATURE_INVALID, TPM_KEY_MISMATCH,
 * TPM_ERROR), the network and the server's 5xx.
 */
export const FINAL_RENEWAL_CODES: ReadonlySet<string> = new Set([
  'DEVICE_REVOKED',
  'DEVICE_DECOMMISSIONED',
  'CLIENT_STOPPED',
  'ATTESTATION_REQUIRED',
  'TPM_EK_UNTRUSTED',
  'TPM_ATTESTATION_INVALID',
  'TPM_KEY_NOT_RESIDENT',
  'TPM_EVIDENCE_MALFORMED',
  'TPM_EK_CERT_MISSING',
  'TPM_TOOLS_MISSING',
]);

function makeKeyStore(config: KeyStore | KeyStoreConfig | undefined, dir: string): KeyStore {
  if (config && 'generate' in config) return config;
  if (!config || config.type === 'software') return new SoftwareKeyStore(dir);
  if (config.type === 'pkcs11') {
    const { type: _type, ...p11 } = config;
    return new Pkcs11KeyStore(p11);
  }
  if (config.type === 'tpm') {
    const { type: _type, ...tpm } = config;
    return new TpmKeyStore(tpm);
  }
  throw new DeviceClientError('INVALID_OPTIONS', 'unknown key store type');
}

function asDeviceError(e: unknown): DeviceClientError {
  return e instanceof DeviceClientError ? e : new DeviceClientError('RENEWAL_FAILED', String(e), { cause: e });
}
