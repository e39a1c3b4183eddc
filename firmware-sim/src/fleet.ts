/**
 * A fleet of simulated devices, each a `DeviceClient` from @fleetgate/device-client (public API
 * only) with its own credential directory under the simulator directory:
 *
 *   <dir>/devices/<id>/    credential.json, key-*.pem, tls-session.json (the library's layout)
 *   <dir>/revoked/<id>/    credentials of devices revoked by a run, kept for inspection
 *   <dir>/burned.json      revoked device ids: the server never reactivates them, so their slot
 *                          gets a new id (<prefix>-<n>-r1, -r2, ...)
 *
 * Slot n is device `<prefix>-<n padded to 6>`. Devices are enrolled on demand (a missing, expired
 * or foreign credential), so later runs reuse credentials and resume TLS sessions from the saved
 * tickets. Enrollment and connects go through a bounded pool; the whole fleet shares one CA bundle
 * string, and the fleet holds one set of handlers (scenarios hook into them), not timers per device.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import {
  type ConnectedEvent,
  CredentialStore,
  DeviceClient,
  isDeviceClientError,
  type KeyStoreConfig,
} from '@fleetgate/device-client';
import { SimError } from './errors.js';
import type { Progress } from './progress.js';
import type { OperatorApi, Target } from './target.js';
import { runPool, withTimeout } from './util.js';

export interface SimDevice {
  readonly slot: number;
  id: string;
  dir: string;
  client: DeviceClient | undefined;
  connected: boolean;
  /** Accepted CONNACKs seen (all phases). */
  connects: number;
  disconnects: number;
  /** Why this device failed the scenario (first reason); undefined while it is fine. */
  failure: string | undefined;
  /** Code of the fatal error that stopped its session, if one did. */
  stopCode: string | undefined;
  /** Scenario scratch space (one object per device, no closures). */
  mark: number;
  flag: boolean;
  resumed: boolean;
  sent: number;
  received: number;
}

export interface FleetHooks {
  connected?(d: SimDevice, e: ConnectedEvent, at: number): void;
  disconnected?(d: SimDevice, at: number): void;
  revoked?(d: SimDevice, at: number): void;
  stopped?(d: SimDevice, code: string | undefined): void;
  message?(d: SimDevice, topic: string, payload: Buffer): void;
}

export interface FleetOptions {
  dir: string;
  prefix: string;
  concurrency: number;
  connectTimeoutMs: number;
  keepalive: number;
  /** MQTT protocol version (5 = MQTT 5.0, 4 = 3.1.1); the device client's default when absent. */
  protocolVersion?: 4 | 5;
  /** The key store of a device (default: software keys in its credential directory). */
  keyStore?: (d: SimDevice) => KeyStoreConfig;
  /** Create the enrollment tokens with requireAttestation 'tpm' (--attest). */
  requireAttestation?: boolean;
}

function slotId(prefix: string, slot: number): string {
  return `${prefix}-${String(slot).padStart(6, '0')}`;
}

function normalizePem(pem: string): string {
  return pem.replace(/\s+/g, '');
}

export class Fleet {
  readonly devices: SimDevice[] = [];
  hooks: FleetHooks = {};
  /** Device-level errors reported by the library, by code (fatal or not). */
  readonly errorCounts = new Map<string, number>();
  private burned = new Set<string>();
  private readonly caCerts: Set<string>;
  private readonly devicesDir: string;
  private readonly revokedDir: string;

  private constructor(
    readonly target: Target,
    readonly api: OperatorApi,
    readonly opts: FleetOptions,
  ) {
    this.devicesDir = path.join(opts.dir, 'devices');
    this.revokedDir = path.join(opts.dir, 'revoked');
    this.caCerts = new Set(
      (target.caPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(normalizePem),
    );
  }

  static async open(target: Target, api: OperatorApi, opts: FleetOptions, size: number): Promise<Fleet> {
    const fleet = new Fleet(target, api, opts);
    try {
      await fs.mkdir(fleet.devicesDir, { recursive: true, mode: 0o700 });
      await fs.mkdir(fleet.revokedDir, { recursive: true, mode: 0o700 });
      const raw = await fs.readFile(path.join(opts.dir, 'burned.json'), 'utf8').catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return '[]';
        throw e;
      });
      const list = JSON.parse(raw) as unknown;
      if (Array.isArray(list)) for (const id of list) if (typeof id === 'string') fleet.burned.add(id);
    } catch (e) {
      throw new SimError('SIM_DIR_INVALID', `cannot use the simulator directory ${opts.dir}: ${(e as Error).message}`);
    }
    for (let slot = 0; slot < size; slot++) {
      const id = fleet.idFor(slot);
      fleet.devices.push({
        slot,
        id,
        dir: path.join(fleet.devicesDir, id),
        client: undefined,
        connected: false,
        connects: 0,
        disconnects: 0,
        failure: undefined,
        stopCode: undefined,
        mark: 0,
        flag: false,
        resumed: false,
        sent: 0,
        received: 0,
      });
    }
    return fleet;
  }

  private idFor(slot: number): string {
    const base = slotId(this.opts.prefix, slot);
    let id = base;
    for (let k = 1; this.burned.has(id); k++) id = `${base}-r${k}`;
    return id;
  }

  countError(code: string): void {
    this.errorCounts.set(code, (this.errorCounts.get(code) ?? 0) + 1);
  }

  fail(d: SimDevice, why: string): void {
    d.failure ??= why;
  }

  /** Has a credential this run can use: present, this device's, not expiring within a minute, from this CA. */
  private async usable(d: SimDevice): Promise<boolean> {
    try {
      const c = await new CredentialStore(d.dir).load();
      const issuer = c.chainPem[0];
      return (
        c.deviceId === d.id &&
        c.notAfter.getTime() > Date.now() + 60_000 &&
        issuer !== undefined &&
        this.caCerts.has(normalizePem(issuer))
      );
    } catch {
      return false;
    }
  }

  /**
   * Enrolls the devices that need it (all of them with `force`). Returns per-enrollment latencies
   * (ms) and how many were enrolled; failures are recorded on the devices.
   */
  async enroll(
    devices: SimDevice[],
    force: boolean,
    progress: Progress,
    stop: () => boolean,
  ): Promise<{ enrolled: number; reused: number; latencies: number[]; ms: number }> {
    const need: SimDevice[] = [];
    if (force) need.push(...devices);
    else {
      const flags = new Array<boolean>(devices.length);
      await runPool(devices, 64, async (d, i) => {
        flags[i] = await this.usable(d);
      });
      devices.forEach((d, i) => {
        if (!flags[i]) need.push(d);
      });
    }
    const reused = devices.length - need.length;
    if (need.length === 0) return { enrolled: 0, reused, latencies: [], ms: 0 };
    const started = Date.now();
    const tokens = await this.tokensFor(need);
    const latencies: number[] = [];
    let done = 0;
    let failed = 0;
    progress.start(
      'enroll',
      need.length,
      () => done,
      () => (failed ? `${failed} failed` : ''),
    );
    await runPool(
      need,
      this.opts.concurrency,
      async (d) => {
        const token = tokens.get(d.id);
        try {
          if (!token) throw new SimError('API_ERROR', `no token issued for ${d.id}`);
          const t0 = performance.now();
          await this.clientFor(d).enroll(token, { replace: true });
          latencies.push(performance.now() - t0);
        } catch (e) {
          failed++;
          const code = isDeviceClientError(e) || e instanceof SimError ? e.code : 'INTERNAL';
          this.countError(code);
          this.fail(d, `enroll: ${code}`);
        } finally {
          done++;
        }
      },
      stop,
    );
    progress.stop();
    return { enrolled: latencies.length, reused, latencies, ms: Date.now() - started };
  }

  /** Tokens for these devices; a device the server already revoked gets a new id and the batch is retried. */
  private async tokensFor(need: SimDevice[]): Promise<Map<string, string>> {
    for (let attempt = 0; ; attempt++) {
      try {
        const issued = await this.api.createTokens(
          need.map((d) => d.id),
          this.opts.requireAttestation ? { requireAttestation: 'tpm' } : {},
        );
        return new Map(issued.map((t) => [t.deviceId, t.token]));
      } catch (e) {
        if (!(e instanceof SimError && e.serverCode === 'CONFLICT') || attempt >= 2) throw e;
        // Someone revoked some of these ids (revoked identities are never reactivated): retire them.
        const revoked = await this.api.revokedDeviceIds();
        const hit = need.filter((d) => revoked.has(d.id));
        if (hit.length === 0) throw e;
        await this.retire(hit);
      }
    }
  }

  /** The device's client, created on first use. */
  clientFor(d: SimDevice): DeviceClient {
    if (d.client) return d.client;
    const client = new DeviceClient({
      deviceId: d.id,
      credentialDir: d.dir,
      ca: this.target.caPem,
      estUrl: this.target.apiUrl,
      mqttUrl: this.target.mqttUrl,
      mqtt: {
        keepalive: this.opts.keepalive,
        connectTimeoutMs: this.opts.connectTimeoutMs,
        protocolVersion: this.opts.protocolVersion,
      },
      estTimeoutMs: 60_000,
      ...(this.opts.keyStore ? { keyStore: this.opts.keyStore(d) } : {}),
    });
    client.on('connected', (e) => {
      d.connected = true;
      d.connects++;
      this.hooks.connected?.(d, e, performance.now());
    });
    client.on('disconnected', () => {
      const was = d.connected;
      d.connected = false;
      if (was) d.disconnects++;
      this.hooks.disconnected?.(d, performance.now());
    });
    client.on('revoked', () => this.hooks.revoked?.(d, performance.now()));
    client.on('error', (e) => this.countError(e.code));
    client.on('stopped', (e) => {
      d.connected = false;
      d.stopCode = e.error?.code;
      this.hooks.stopped?.(d, e.error?.code);
    });
    client.on('message', (topic, payload) => this.hooks.message?.(d, topic, payload));
    d.client = client;
    return client;
  }

  /** Connects these devices, at most `concurrency` at a time; failures are recorded on the devices. */
  async connect(
    devices: SimDevice[],
    progress: Progress,
    stop: () => boolean,
    label = 'connect',
  ): Promise<{ connected: number; resumed: number; full: number; ms: number }> {
    const started = Date.now();
    let done = 0;
    let failed = 0;
    let resumed = 0;
    let full = 0;
    progress.start(
      label,
      devices.length,
      () => done,
      () => (failed ? `${failed} failed` : ''),
    );
    await runPool(
      devices,
      this.opts.concurrency,
      async (d) => {
        if (d.failure) {
          done++;
          return;
        }
        const client = this.clientFor(d);
        try {
          const e = await withTimeout(
            client.connect(),
            this.opts.connectTimeoutMs,
            () => new SimError('SERVER_UNREACHABLE', `no CONNACK within ${this.opts.connectTimeoutMs} ms`),
          );
          if (e.resumed) resumed++;
          else full++;
        } catch (e) {
          failed++;
          const code = isDeviceClientError(e) ? e.code : e instanceof SimError ? 'CONNECT_TIMEOUT' : 'INTERNAL';
          if (code === 'CONNECT_TIMEOUT') this.countError(code);
          this.fail(d, `connect: ${code}`);
          await client.close().catch(() => undefined);
          d.client = undefined;
          if (code === 'DEVICE_REVOKED') await this.retire([d]);
        } finally {
          done++;
        }
      },
      stop,
    );
    progress.stop();
    return { connected: resumed + full, resumed, full, ms: Date.now() - started };
  }

  /** Stops these devices' clients (MQTT DISCONNECT), many at once. */
  async close(devices: SimDevice[] = this.devices): Promise<void> {
    await runPool(devices, 500, async (d) => {
      const c = d.client;
      d.client = undefined;
      d.connected = false;
      if (c) await c.close().catch(() => undefined);
    });
  }

  /**
   * Revoked devices are never coming back: remember their ids (the slot gets a new one next run)
   * and move their credentials to <dir>/revoked/<id>.
   */
  async retire(devices: SimDevice[]): Promise<void> {
    for (const d of devices) this.burned.add(d.id);
    const file = path.join(this.opts.dir, 'burned.json');
    const tmp = `${file}.${process.pid}.tmp`;
    await fs.writeFile(tmp, `${JSON.stringify([...this.burned])}\n`, { mode: 0o600 });
    await fs.rename(tmp, file);
    for (const d of devices) {
      const to = path.join(this.revokedDir, d.id);
      await fs.rm(to, { recursive: true, force: true });
      await fs.rename(d.dir, to).catch(() => undefined);
      d.dir = to;
    }
  }

  /** The credential directory of a device retired earlier (to try it again). */
  revokedDirOf(id: string): string {
    return path.join(this.revokedDir, id);
  }
}
