/**
 * PKCS#11 key store: any PKCS#11 module (SoftHSM2, a hardware HSM, or a TPM 2.0 through
 * tpm2-pkcs11). Keys are generated on the token (CKA_TOKEN, CKA_SENSITIVE, not extractable) and
 * addressed by an RFC 7512 URI; the private key never exists in this process.
 *
 * - CSR signing: WebCrypto over PKCS#11 (node-webcrypto-p11) on a session we open ourselves, so
 *   closing this store never calls C_Finalize under OpenSSL's engine.
 * - TLS: OpenSSL's pkcs11 engine (libengine-pkcs11-openssl) via `privateKeyEngine` /
 *   `privateKeyIdentifier`. The engine loads the module named by PKCS11_MODULE_PATH once per
 *   process, so a process uses one PKCS#11 module for TLS; this store sets the variable when it
 *   is unset and refuses a conflicting one.
 *
 * graphene-pk11 and node-webcrypto-p11 are optional dependencies, imported when a store first opens
 * (./pkcs11-support.ts); only their types are named here, and none of them reaches the emitted
 * declarations, so the package type-checks where they are absent.
 */
import { existsSync, readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import type * as Graphene from 'graphene-pk11';
import type * as WebCryptoP11 from 'node-webcrypto-p11';
import { describeCause, KeyStoreError } from '../errors.js';
import { randomHex } from '../util.js';
import { loadPkcs11Support } from './pkcs11-support.js';
import {
  type CryptoKey,
  type CryptoKeyPair,
  type DeviceKey,
  EC_P256,
  type KeyRef,
  type KeyStore,
  type TlsKeyOptions,
  type WebCrypto,
} from './types.js';

// PKCS#11 return values (PKCS#11 v2.40 section 3.6).
const CKR_PIN_INCORRECT = 0xa0;
const CKR_PIN_LOCKED = 0xa4;
const CKR_USER_ALREADY_LOGGED_IN = 0x100;
const CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191;
// C_Initialize flags (PKCS#11 v2.40 section 5.4, CK_C_INITIALIZE_ARGS).
const CKF_OS_LOCKING_OK = 0x2;

export interface Pkcs11KeyStoreOptions {
  /** Path of the PKCS#11 module (.so). */
  module: string;
  /** Token label (RFC 7512 `token=`). */
  token: string;
  /** User PIN. Kept in memory only; never written to the credential directory. */
  pin: string;
  /** OpenSSL pkcs11 engine (engines-3/pkcs11.so); found in the usual places when omitted. */
  enginePath?: string;
  /**
   * What to pass as `privateKeyEngine`: the engine id `pkcs11` when OPENSSL_CONF preloads it (see
   * pkcs11OpenSslConfig), else the engine path. Default: `pkcs11` when the file named by
   * OPENSSL_CONF loads a pkcs11 engine, the path otherwise. Loaded by path, the engine
   * initialises once per process, so only one token key can be used for TLS until a restart.
   */
  engine?: string;
  /** Prefix of the CKA_LABEL of generated keys (default `fleetgate`). */
  labelPrefix?: string;
}

const ENGINE_CANDIDATES = [
  '/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so',
  '/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so',
  '/usr/lib/arm-linux-gnueabihf/engines-3/pkcs11.so',
  '/usr/lib64/engines-3/pkcs11.so',
  '/usr/lib/engines-3/pkcs11.so',
  '/usr/local/lib/engines-3/pkcs11.so',
];

export function findPkcs11Engine(): string | undefined {
  return ENGINE_CANDIDATES.find((p) => existsSync(p));
}

/**
 * An OpenSSL config for Node (section `nodejs_conf`) that preloads the pkcs11 engine under the id
 * `pkcs11` without initialising it. Start node with OPENSSL_CONF pointing at it and every token
 * key can be used for TLS in the same process (renewal without restart).
 */
export function pkcs11OpenSslConfig(enginePath = findPkcs11Engine()): string {
  if (!enginePath) throw new KeyStoreError('PKCS11_MODULE_MISSING', 'OpenSSL pkcs11 engine not found');
  return [
    'nodejs_conf = fleetgate_openssl_init',
    '[fleetgate_openssl_init]',
    'engines = fleetgate_engines',
    '[fleetgate_engines]',
    'pkcs11 = fleetgate_pkcs11',
    '[fleetgate_pkcs11]',
    'engine_id = pkcs11',
    `dynamic_path = ${enginePath}`,
    'init = 0',
    '',
  ].join('\n');
}

/** Whether the OpenSSL config of this process preloads the pkcs11 engine (by id). */
export function pkcs11EnginePreloaded(): boolean {
  const conf = process.env.OPENSSL_CONF;
  if (!conf) return false;
  try {
    const text = readFileSync(conf, 'utf8');
    return /^\s*engine_id\s*=\s*pkcs11\s*$/m.test(text) && /^\s*nodejs_conf\s*=/m.test(text);
  } catch {
    return false;
  }
}

/** RFC 7512 2.3: percent-encode everything outside the unreserved set of a path attribute. */
function pct(value: string): string {
  return Array.from(Buffer.from(value, 'utf8'))
    .map((b) => {
      const c = String.fromCharCode(b);
      return /[A-Za-z0-9\-._~:[\]@!$'()*+,=&]/.test(c) ? c : `%${b.toString(16).padStart(2, '0').toUpperCase()}`;
    })
    .join('');
}

function unpct(value: string): string {
  return Buffer.from(
    value.replace(/%([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(Number.parseInt(h, 16))),
    'latin1',
  ).toString('utf8');
}

export function pkcs11Uri(attrs: { token: string; object: string; type?: 'private' | 'public' }): string {
  return `pkcs11:token=${pct(attrs.token)};object=${pct(attrs.object)};type=${attrs.type ?? 'private'}`;
}

/** Parses the path attributes of a PKCS#11 URI (RFC 7512); query attributes are ignored. */
export function parsePkcs11Uri(uri: string): Record<string, string> {
  if (!uri.startsWith('pkcs11:')) throw new KeyStoreError('KEY_INVALID', 'not a PKCS#11 URI');
  const body = uri.slice('pkcs11:'.length).split('?')[0] ?? '';
  const out: Record<string, string> = {};
  for (const part of body.split(';')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new KeyStoreError('KEY_INVALID', `malformed PKCS#11 URI attribute: ${part}`);
    out[part.slice(0, eq)] = unpct(part.slice(eq + 1));
  }
  return out;
}

type P11Key = CryptoKey & { algorithm: { label?: string } };
type P11Crypto = WebCryptoP11.Crypto;

class Pkcs11Key implements DeviceKey {
  constructor(
    readonly ref: { type: 'pkcs11'; uri: string },
    readonly keys: CryptoKeyPair,
    readonly crypto: WebCrypto,
    private readonly tls: () => TlsKeyOptions,
  ) {}
  async spki(): Promise<Uint8Array> {
    return new Uint8Array(await this.crypto.subtle.exportKey('spki', this.keys.publicKey));
  }
  tlsOptions(): TlsKeyOptions {
    return this.tls();
  }
  toJSON(): KeyRef {
    return this.ref;
  }
  [inspect.custom](): string {
    return `Pkcs11Key(${this.ref.uri})`;
  }
}

function mapPkcs11Error(e: unknown, what: string): KeyStoreError {
  if (e instanceof KeyStoreError) return e;
  const code = (e as { code?: unknown }).code;
  const message = describeCause(e);
  if (code === CKR_PIN_INCORRECT || /CKR_PIN_INCORRECT/.test(message))
    return new KeyStoreError('PKCS11_PIN_INCORRECT', `${what}: the PKCS#11 PIN is incorrect`, { cause: e });
  if (code === CKR_PIN_LOCKED || /CKR_PIN_LOCKED/.test(message))
    return new KeyStoreError('PKCS11_PIN_LOCKED', `${what}: the token's user PIN is locked`, { cause: e });
  return new KeyStoreError('PKCS11_ERROR', `${what}: ${message}`, { cause: e });
}

export class Pkcs11KeyStore implements KeyStore {
  readonly type = 'pkcs11' as const;
  private module: Graphene.Module | undefined;
  private session: Graphene.Session | undefined;
  private p11: P11Crypto | undefined;
  readonly #pin: string;
  private readonly opts: Omit<Pkcs11KeyStoreOptions, 'pin'>;

  constructor(options: Pkcs11KeyStoreOptions) {
    const { pin, ...rest } = options;
    this.#pin = pin;
    this.opts = rest;
  }

  [inspect.custom](): string {
    return `Pkcs11KeyStore(${this.opts.module}, token=${this.opts.token})`;
  }
  toJSON(): object {
    return { type: this.type, module: this.opts.module, token: this.opts.token };
  }

  /**
   * Loads the optional PKCS#11 packages and the module, finds the token by label and logs in.
   * Idempotent. Resolves to node-webcrypto-p11's Crypto over the session (typed loosely so that
   * this package's declarations do not require the optional packages).
   */
  async open(): Promise<WebCrypto> {
    return (await this.openP11()) as unknown as WebCrypto;
  }

  private async openP11(): Promise<P11Crypto> {
    if (this.p11) return this.p11;
    const { graphene, webcrypto } = await loadPkcs11Support();
    if (!existsSync(this.opts.module))
      throw new KeyStoreError('PKCS11_MODULE_MISSING', `PKCS#11 module not found: ${this.opts.module}`);
    let mod: Graphene.Module;
    try {
      mod = graphene.Module.load(this.opts.module, 'fleetgate');
    } catch (e) {
      throw new KeyStoreError(
        'PKCS11_MODULE_MISSING',
        `cannot load PKCS#11 module ${this.opts.module}: ${describeCause(e)}`,
        { cause: e },
      );
    }
    try {
      // CKF_OS_LOCKING_OK (PKCS#11 v2.40 5.4): node-webcrypto-p11 runs token calls on libuv's thread
      // pool, so several keys of one process call the module at once. A module initialised without
      // it may assume one thread: tpm2-pkcs11 then drives its TPM context from parallel threads and
      // fails ("Esys called in bad sequence", measured with five devices enrolling at once).
      mod.initialize({ flags: CKF_OS_LOCKING_OK });
    } catch (e) {
      if ((e as { code?: unknown }).code !== CKR_CRYPTOKI_ALREADY_INITIALIZED)
        throw mapPkcs11Error(e, `C_Initialize of ${this.opts.module}`);
    }
    this.module = mod;
    let slot: Graphene.Slot | undefined;
    const labels: string[] = [];
    try {
      const slots = mod.getSlots(true);
      for (let i = 0; i < slots.length; i++) {
        const s = slots.items(i);
        const label = s.getToken().label.trim();
        labels.push(label);
        if (label === this.opts.token) {
          slot = s;
          break;
        }
      }
    } catch (e) {
      throw mapPkcs11Error(e, 'listing PKCS#11 slots');
    }
    if (!slot)
      throw new KeyStoreError(
        'PKCS11_TOKEN_NOT_FOUND',
        `no PKCS#11 token labelled "${this.opts.token}" in ${this.opts.module} (tokens: ${labels.map((l) => JSON.stringify(l)).join(', ') || 'none'})`,
      );
    try {
      this.session = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
    } catch (e) {
      throw mapPkcs11Error(e, 'opening a PKCS#11 session');
    }
    try {
      this.session.login(this.#pin, graphene.UserType.USER);
    } catch (e) {
      const err = mapPkcs11Error(e, `logging in to token "${this.opts.token}"`);
      if ((e as { code?: unknown }).code !== CKR_USER_ALREADY_LOGGED_IN) {
        this.session.close();
        this.session = undefined;
        throw err;
      }
    }
    // A session container: node-webcrypto-p11 will not C_Finalize a module it did not initialize.
    const p11 = new webcrypto.Crypto({ session: this.session });
    // Leave usage attributes we do not want (CKA_DERIVE, CKA_DECRYPT, ... = false) to the token's
    // defaults instead of stating them: tpm2-pkcs11 refuses a template whose attributes differ from
    // what the TPM key really allows ("User specified and TPM specified attr mismatch").
    const base = new webcrypto.TemplateBuilder();
    p11.templateBuilder = {
      build(params) {
        const template = base.build(params) as Record<string, unknown>;
        for (const k of ['derive', 'decrypt', 'unwrap', 'encrypt', 'wrap'])
          if (template[k] === false) delete template[k];
        return template as ReturnType<WebCryptoP11.TemplateBuilder['build']>;
      },
    };
    this.p11 = p11;
    return p11;
  }

  async generate(hint: { deviceId: string }): Promise<DeviceKey> {
    const p11 = await this.openP11();
    const label = `${this.opts.labelPrefix ?? 'fleetgate'}-${hint.deviceId}-${randomHex(4)}`;
    let keys: CryptoKeyPair;
    try {
      keys = (await p11.subtle.generateKey(
        { ...EC_P256, token: true, sensitive: true, label } as Parameters<P11Crypto['subtle']['generateKey']>[0],
        false,
        ['sign', 'verify'],
      )) as unknown as CryptoKeyPair;
    } catch (e) {
      throw mapPkcs11Error(e, 'generating a P-256 key on the token');
    }
    return this.key(label, keys, p11);
  }

  async load(ref: KeyRef): Promise<DeviceKey> {
    if (ref.type !== 'pkcs11') throw new KeyStoreError('KEY_INVALID', `not a PKCS#11 key reference: ${ref.type}`);
    const attrs = parsePkcs11Uri(ref.uri);
    if (attrs.token !== undefined && attrs.token !== this.opts.token)
      throw new KeyStoreError(
        'PKCS11_TOKEN_NOT_FOUND',
        `the key is on token "${attrs.token}", this key store opens "${this.opts.token}"`,
      );
    const label = attrs.object;
    if (!label) throw new KeyStoreError('KEY_INVALID', 'the PKCS#11 URI names no object');
    const p11 = await this.openP11();
    const found = await this.find(p11, label);
    if (!found.privateKey || !found.publicKey)
      throw new KeyStoreError(
        'PKCS11_KEY_NOT_FOUND',
        `no key pair labelled "${label}" on token "${this.opts.token}" (${ref.uri})`,
      );
    return this.key(label, { privateKey: found.privateKey, publicKey: found.publicKey }, p11);
  }

  async remove(ref: KeyRef): Promise<void> {
    if (ref.type !== 'pkcs11') return;
    const label = parsePkcs11Uri(ref.uri).object;
    if (!label) return;
    const p11 = await this.openP11();
    try {
      for (const index of await p11.keyStorage.keys()) {
        const item = (await p11.keyStorage.getItem(index)) as unknown as P11Key;
        if (item.algorithm.label === label) await p11.keyStorage.removeItem(index);
      }
    } catch (e) {
      throw mapPkcs11Error(e, `removing key "${label}"`);
    }
  }

  /** Whether the token reports the private key extractable (CKA_EXTRACTABLE); for audits and tests. */
  async isExtractable(ref: KeyRef): Promise<boolean> {
    const key = await this.load(ref);
    return key.keys.privateKey.extractable;
  }

  async close(): Promise<void> {
    // Close our session only. C_Finalize would pull the module out from under OpenSSL's engine,
    // which shares it in this process.
    try {
      this.session?.logout();
    } catch {
      // not logged in, or another session of this application keeps the login
    }
    try {
      this.session?.close();
    } catch {
      // already closed
    }
    this.session = undefined;
    this.p11 = undefined;
  }

  private async find(p11: P11Crypto, label: string): Promise<{ privateKey?: CryptoKey; publicKey?: CryptoKey }> {
    const out: { privateKey?: CryptoKey; publicKey?: CryptoKey } = {};
    try {
      for (const index of await p11.keyStorage.keys()) {
        const item = (await p11.keyStorage.getItem(index)) as unknown as P11Key;
        if (item.algorithm.label !== label) continue;
        if (item.type === 'private') out.privateKey = item;
        else if (item.type === 'public') out.publicKey = item;
      }
    } catch (e) {
      throw mapPkcs11Error(e, `looking up key "${label}"`);
    }
    return out;
  }

  private key(label: string, keys: CryptoKeyPair, p11: P11Crypto): DeviceKey {
    const uri = pkcs11Uri({ token: this.opts.token, object: label });
    return new Pkcs11Key({ type: 'pkcs11', uri }, keys, p11 as unknown as WebCrypto, () => this.tlsKeyOptions(uri));
  }

  private tlsKeyOptions(uri: string): TlsKeyOptions {
    const engine =
      this.opts.engine ?? (pkcs11EnginePreloaded() ? 'pkcs11' : (this.opts.enginePath ?? findPkcs11Engine()));
    if (!engine || (engine.includes('/') && !existsSync(engine)))
      throw new KeyStoreError(
        'PKCS11_MODULE_MISSING',
        `OpenSSL pkcs11 engine not found${engine ? ` at ${engine}` : ''} (install libengine-pkcs11-openssl or set enginePath)`,
      );
    const current = process.env.PKCS11_MODULE_PATH;
    if (current === undefined || current === '') process.env.PKCS11_MODULE_PATH = this.opts.module;
    else if (current !== this.opts.module)
      throw new KeyStoreError(
        'PKCS11_ERROR',
        `PKCS11_MODULE_PATH is ${current} but this key lives in ${this.opts.module}: OpenSSL's engine uses one module per process`,
      );
    return { privateKeyEngine: engine, privateKeyIdentifier: `${uri}?pin-value=${pct(this.#pin)}` };
  }
}
