/**
 * The issuing CA key in a PKCS#11 token (an HSM, SoftHSM2, a cloud HSM's PKCS#11 library):
 * a CaSigner (ca/signer.ts) whose private key never leaves the token. graphene-pk11 (over the
 * native addon pkcs11js, the binding the device client already uses) is an optional dependency,
 * imported only when FLEETGATE_CA_KEY_URI is set.
 *
 * - Keys are generated inside the token: CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE true,
 *   CKA_EXTRACTABLE false (PKCS#11 v2.40 section 4.9: a sensitive, non-extractable private key
 *   cannot be read or wrapped out of the token).
 * - ECDSA: the data is hashed here and the digest signed with CKM_ECDSA (PKCS#11 v2.40
 *   Mechanisms 2.3.6), which every token implements; the signature is r || s, WebCrypto's form.
 *   RSA: CKM_SHA256_RSA_PKCS (PKCS#1 v1.5, RFC 8017 8.2).
 * - Signing runs in pkcs11js's worker thread (C_Sign off the event loop). A session runs one
 *   operation at a time (PKCS#11 v2.40 section 5.2), so signing uses a small pool of sessions,
 *   each with its own queue.
 * - Every failure of the token while running (removed, session lost, device error) is
 *   CA_SIGNER_UNAVAILABLE: callers fail closed (503, OCSP tryLater), one log line per outage, and
 *   the next signature tries to open fresh sessions, so the CA resumes when the token is back.
 *
 * The PIN is read from its file when the token is opened and kept only inside this module's
 * closure; it is never logged, put in an error message or passed on a command line.
 */
import { existsSync, readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import type * as Graphene from 'graphene-pk11';
import type { Logger } from 'pino';
import { digestSync } from '../ca/crypto.js';
import { encodeOid, seq, TAG, tlv } from '../ca/der.js';
import type { CaKeyAlgorithm } from '../ca/keys.js';
import { type CaSigner, type SigningAlgorithm, signerUnavailable } from '../ca/signer.js';
import { FleetgateError } from '../errors.js';
import { formatPkcs11Uri, type Pkcs11Uri } from './pkcs11-uri.js';

// PKCS#11 return values (PKCS#11 v2.40 section 3.6) the messages name.
const CKR_PIN_INCORRECT = 0xa0;
const CKR_PIN_LOCKED = 0xa4;
const CKR_USER_ALREADY_LOGGED_IN = 0x100;
/** CK_C_INITIALIZE_ARGS flags (PKCS#11 v2.40 section 3.7). */
const CKF_OS_LOCKING_OK = 0x2;

const SESSIONS = 4;
const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const CURVE_OIDS: Record<'P-256' | 'P-384', string> = { 'P-256': '1.2.840.10045.3.1.7', 'P-384': '1.3.132.0.34' };

export interface Pkcs11Options {
  module: string;
  uri: Pkcs11Uri;
  pinFile: string;
}

function configInvalid(message: string): FleetgateError {
  return new FleetgateError('CONFIG_INVALID', message);
}

function ckr(e: unknown): number | undefined {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The PKCS#11 error name only (CKR_...), never the whole native message. */
function ckrName(e: unknown): string {
  const m = /CKR_[A-Z_]+/.exec(String((e as Error)?.message ?? ''));
  return m?.[0] ?? (ckr(e) !== undefined ? `CKR 0x${ckr(e)!.toString(16)}` : 'error');
}

async function loadGraphene(): Promise<typeof Graphene> {
  try {
    return await import('graphene-pk11');
  } catch {
    throw configInvalid(
      'FLEETGATE_CA_KEY_URI needs the optional package graphene-pk11 (it builds the native addon pkcs11js: a C++ compiler, make and python3 are needed once): npm install graphene-pk11',
    );
  }
}

function readPin(pinFile: string): string {
  let content: string;
  try {
    content = readFileSync(pinFile, 'utf8');
  } catch (e) {
    throw configInvalid(
      `FLEETGATE_PKCS11_PIN_FILE: cannot read ${pinFile} (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  // One trailing newline (echo 1234 > pin) is not part of the PIN; nothing else is trimmed.
  const pin = content.replace(/\r?\n$/, '');
  if (pin.length === 0 || pin.length > 255 || /[\r\n\0]/.test(pin)) {
    throw configInvalid(`FLEETGATE_PKCS11_PIN_FILE: ${pinFile} must hold one PIN on one line`);
  }
  return pin;
}

function matchesToken(uri: Pkcs11Uri, slot: Graphene.Slot): boolean {
  const t = slot.getToken();
  // CK_TOKEN_INFO fields are blank-padded (PKCS#11 v2.40 section 3.2).
  if (uri.token !== undefined && t.label.trimEnd() !== uri.token) return false;
  if (uri.serial !== undefined && t.serialNumber.trimEnd() !== uri.serial) return false;
  if (uri.manufacturer !== undefined && t.manufacturerID.trimEnd() !== uri.manufacturer) return false;
  if (uri.model !== undefined && t.model.trimEnd() !== uri.model) return false;
  return true;
}

/** An open token: sessions logged in as the user. */
export interface Pkcs11Token {
  readonly uri: Pkcs11Uri;
  /** The signer over the key the URI names; refuses (CA_MATERIAL_INVALID) when the token has no such key. */
  signer(log?: Logger): Pkcs11Signer;
  /** Generates the key pair the URI names inside the token; returns its SubjectPublicKeyInfo DER. */
  generateKeyPair(algorithm: CaKeyAlgorithm): Promise<Uint8Array>;
  /** Whether the token holds a private key the URI names. */
  hasKey(): boolean;
  /** Destroys the key pair the URI names (undoing a generateKeyPair whose CA was not completed). */
  destroyKeyPair(): void;
  /** CKA_EXTRACTABLE, CKA_SENSITIVE, CKA_NEVER_EXTRACTABLE of the private key (for checks and tests). */
  keyAttributes(): { extractable: boolean; sensitive: boolean; neverExtractable: boolean };
  close(): void;
}

export interface Pkcs11Signer extends CaSigner {
  readonly backend: 'pkcs11';
  /** The key's URI, for logs and `fleetgate ca list` (never a PIN). */
  readonly uri: string;
}

/**
 * Loads the module, finds the token, logs in. Refusals are one line (FleetgateError
 * CONFIG_INVALID): the module missing or not loadable, no token the URI names, a wrong or locked PIN.
 */
export async function openPkcs11Token(opts: Pkcs11Options): Promise<Pkcs11Token> {
  const graphene = await loadGraphene();
  if (!existsSync(opts.module)) throw configInvalid(`FLEETGATE_PKCS11_MODULE: ${opts.module} does not exist`);
  const pin = readPin(opts.pinFile);
  let mod: Graphene.Module;
  try {
    mod = graphene.Module.load(opts.module, 'fleetgate-ca');
    // CKF_OS_LOCKING_OK: C_Sign runs on pkcs11js's worker threads, several at once, so the module
    // must lock for itself (PKCS#11 v2.40 section 5.4, C_Initialize; with no arguments a module
    // may assume one thread and SoftHSM2 then crashes under concurrent signatures). graphene
    // ignores CKR_CRYPTOKI_ALREADY_INITIALIZED (another user of the module in this process).
    mod.initialize({ flags: CKF_OS_LOCKING_OK });
  } catch (e) {
    // The loader's own first line (dlopen's "invalid ELF header", a missing C_GetFunctionList):
    // it names the file, never the PIN, which is not used yet.
    const reason = /CKR_/.test(String((e as Error)?.message))
      ? ckrName(e)
      : String((e as Error)?.message ?? e)
          .split('\n')[0]!
          .slice(0, 200);
    throw configInvalid(`FLEETGATE_PKCS11_MODULE: cannot load ${opts.module} as a PKCS#11 module (${reason})`);
  }
  const uriText = formatPkcs11Uri(opts.uri);

  const findSlot = (): Graphene.Slot | null => {
    const slots = mod.getSlots(true);
    for (let i = 0; i < slots.length; i++) {
      const s = slots.items(i);
      if (opts.uri.slotId !== undefined && s.handle.readUIntLE(0, Math.min(6, s.handle.length)) !== opts.uri.slotId)
        continue;
      if (matchesToken(opts.uri, s)) return s;
    }
    return null;
  };

  const openSession = (slot: Graphene.Slot): Graphene.Session => {
    const session = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
    try {
      session.login(pin, graphene.UserType.USER);
    } catch (e) {
      if (ckr(e) !== CKR_USER_ALREADY_LOGGED_IN) {
        session.close();
        throw e;
      }
    }
    return session;
  };

  const slot = findSlot();
  if (slot === null) throw configInvalid(`FLEETGATE_CA_KEY_URI: no token ${uriText} in ${opts.module}`);
  let admin: Graphene.Session;
  try {
    admin = openSession(slot);
  } catch (e) {
    if (ckr(e) === CKR_PIN_INCORRECT) throw configInvalid('FLEETGATE_PKCS11_PIN_FILE: the PIN is incorrect');
    if (ckr(e) === CKR_PIN_LOCKED) throw configInvalid("FLEETGATE_PKCS11_PIN_FILE: the token's user PIN is locked");
    throw configInvalid(`FLEETGATE_CA_KEY_URI: cannot log in to ${uriText} (${ckrName(e)})`);
  }

  const keyTemplate = (cls: number): Graphene.ITemplate => ({
    class: cls,
    ...(opts.uri.object !== undefined ? { label: opts.uri.object } : {}),
    ...(opts.uri.id !== undefined ? { id: Buffer.from(opts.uri.id) } : {}),
  });
  const findPrivate = (session: Graphene.Session): Graphene.PrivateKey | null => {
    const found = session.find(keyTemplate(graphene.ObjectClass.PRIVATE_KEY));
    if (found.length === 0) return null;
    if (found.length > 1) {
      throw new FleetgateError('CA_MATERIAL_INVALID', `${uriText} names ${found.length} private keys; give it an id=`);
    }
    return found.items(0).toType<Graphene.PrivateKey>();
  };

  const algorithmOf = (key: Graphene.PrivateKey): CaKeyAlgorithm => {
    const { keyType } = key.getAttribute({ keyType: null });
    if (keyType === graphene.KeyType.EC) {
      // graphene names CKA_EC_PARAMS paramsECDSA when it reads it back (its old name).
      const read = key.getAttribute({ paramsEC: null });
      const params = read.paramsEC ?? read.paramsECDSA;
      for (const [curve, oid] of Object.entries(CURVE_OIDS) as ['P-256' | 'P-384', string][]) {
        if (params && Buffer.from(encodeOid(oid)).equals(params)) return curve;
      }
    } else if (keyType === graphene.KeyType.RSA) {
      // CKA_MODULUS_BITS lives on the public key; the private key's CKA_MODULUS gives it too.
      const modulus = key.getAttribute({ modulus: null }).modulus;
      if (modulus && modulus.byteLength * 8 === 3072) return 'RSA-3072';
    }
    throw new FleetgateError('CA_MATERIAL_INVALID', `the key ${uriText} is not one of P-256, P-384, RSA-3072`);
  };

  return {
    uri: opts.uri,
    hasKey: () => findPrivate(admin) !== null,
    destroyKeyPair() {
      for (const cls of [graphene.ObjectClass.PRIVATE_KEY, graphene.ObjectClass.PUBLIC_KEY]) {
        const found = admin.find(keyTemplate(cls));
        for (let i = 0; i < found.length; i++) found.items(i).destroy();
      }
    },
    keyAttributes() {
      const key = findPrivate(admin);
      if (key === null) throw new FleetgateError('CA_MATERIAL_INVALID', `token has no private key ${uriText}`);
      const a = key.getAttribute({ extractable: null, sensitive: null, neverExtractable: null });
      return {
        extractable: a.extractable === true,
        sensitive: a.sensitive === true,
        neverExtractable: a.neverExtractable === true,
      };
    },
    async generateKeyPair(algorithm) {
      if (findPrivate(admin) !== null) {
        throw new FleetgateError(
          'CA_MATERIAL_INVALID',
          `the token already holds a key ${uriText}; refusing to replace it`,
        );
      }
      const label = opts.uri.object ?? 'fleetgate-issuing-ca';
      const id = Buffer.from(opts.uri.id ?? digestSync('SHA-1', new TextEncoder().encode(`${label}/${Date.now()}`)));
      const common = { token: true, label, id };
      const privateTemplate: Graphene.ITemplate = {
        ...common,
        class: graphene.ObjectClass.PRIVATE_KEY,
        private: true,
        sensitive: true,
        extractable: false,
        sign: true,
      };
      const publicTemplate: Graphene.ITemplate = { ...common, class: graphene.ObjectClass.PUBLIC_KEY, verify: true };
      try {
        if (algorithm === 'RSA-3072') {
          const pair = admin.generateKeyPair(
            graphene.KeyGenMechanism.RSA,
            {
              ...publicTemplate,
              keyType: graphene.KeyType.RSA,
              modulusBits: 3072,
              publicExponent: Buffer.from([1, 0, 1]),
            },
            { ...privateTemplate, keyType: graphene.KeyType.RSA },
          );
          const { modulus, publicExponent } = pair.publicKey.getAttribute({ modulus: null, publicExponent: null });
          return rsaSpki(modulus!, publicExponent!);
        }
        const pair = admin.generateKeyPair(
          graphene.KeyGenMechanism.EC,
          { ...publicTemplate, keyType: graphene.KeyType.EC, paramsEC: Buffer.from(encodeOid(CURVE_OIDS[algorithm])) },
          { ...privateTemplate, keyType: graphene.KeyType.EC },
        );
        return ecSpki(algorithm, pair.publicKey.getAttribute({ pointEC: null }).pointEC!);
      } catch (e) {
        if (e instanceof FleetgateError) throw e;
        throw new FleetgateError(
          'CA_MATERIAL_INVALID',
          `cannot generate a ${algorithm} key in ${uriText} (${ckrName(e)})`,
        );
      }
    },
    signer(log) {
      const key = findPrivate(admin);
      if (key === null) {
        throw new FleetgateError(
          'CA_MATERIAL_INVALID',
          `the token has no private key ${uriText} (run \`fleetgate ca init --pkcs11\` to create it)`,
        );
      }
      const algorithm = algorithmOf(key);
      return pooledSigner({
        graphene,
        uriText,
        algorithm,
        log,
        open: () => {
          const s = findSlot();
          if (s === null) throw new Error('CKR_TOKEN_NOT_PRESENT');
          const session = openSession(s);
          const k = findPrivate(session);
          if (k === null) {
            session.close();
            throw new Error('CKR_KEY_HANDLE_INVALID');
          }
          return { session, key: k };
        },
      });
    },
    close() {
      // No C_Logout: the login state is per application (PKCS#11 v2.40 section 5.6), so it would
      // log out the signer's sessions too; closing the session is enough.
      try {
        admin.close();
      } catch {
        // the token is gone
      }
    },
  };
}

interface Lane {
  session: Graphene.Session;
  key: Graphene.PrivateKey;
  tail: Promise<unknown>;
}

function pooledSigner(o: {
  graphene: typeof Graphene;
  uriText: string;
  algorithm: CaKeyAlgorithm;
  log: Logger | undefined;
  open: () => { session: Graphene.Session; key: Graphene.PrivateKey };
}): Pkcs11Signer {
  let lanes: Lane[] | null = null;
  let next = 0;
  let down = false;
  const mechanism = o.algorithm === 'RSA-3072' ? 'SHA256_RSA_PKCS' : 'ECDSA';
  const hash = o.algorithm === 'P-384' ? 'SHA-384' : 'SHA-256';

  const dropLanes = () => {
    for (const lane of lanes ?? []) {
      try {
        lane.session.close();
      } catch {
        // the session is already gone with the token
      }
    }
    lanes = null;
  };
  const ensureLanes = (): Lane[] => {
    if (lanes !== null) return lanes;
    const opened: Lane[] = [];
    try {
      for (let i = 0; i < SESSIONS; i++) opened.push({ ...o.open(), tail: Promise.resolve() });
    } catch (e) {
      for (const lane of opened) lane.session.close();
      throw e;
    }
    lanes = opened;
    return opened;
  };
  const unavailable = (e: unknown): FleetgateError => {
    dropLanes();
    const reason = ckrName(e);
    if (!down) {
      down = true;
      o.log?.error(
        { key: o.uriText, reason },
        'CA signing key unreachable: signing fails closed (503) until the token is back',
      );
    }
    return signerUnavailable(`the issuing CA key ${o.uriText} is unreachable (${reason})`);
  };

  const signer: Pkcs11Signer = {
    backend: 'pkcs11',
    algorithm: o.algorithm,
    uri: o.uriText,
    async sign(alg: SigningAlgorithm, data: Uint8Array): Promise<Uint8Array> {
      if (alg.hash !== hash) throw new FleetgateError('INTERNAL', `the token signs with ${hash}, not ${alg.hash}`);
      let pool: Lane[];
      try {
        pool = ensureLanes();
      } catch (e) {
        throw unavailable(e);
      }
      const lane = pool[next++ % pool.length]!;
      const input = Buffer.from(mechanism === 'ECDSA' ? digestSync(hash, data) : data);
      const run = lane.tail.then(
        () =>
          new Promise<Uint8Array>((resolve, reject) => {
            try {
              lane.session
                .createSign(mechanism, lane.key)
                .once(input, (err, sig) => (err ? reject(err) : resolve(new Uint8Array(sig))));
            } catch (e) {
              reject(e);
            }
          }),
      );
      lane.tail = run.catch(() => undefined);
      try {
        const sig = await run;
        if (down) {
          down = false;
          o.log?.info({ key: o.uriText }, 'CA signing key reachable again');
        }
        return sig;
      } catch (e) {
        throw unavailable(e);
      }
    },
  };
  Object.defineProperty(signer, inspect.custom, { value: () => `Pkcs11Signer(${o.uriText})` });
  return signer;
}

/** SubjectPublicKeyInfo of an EC key from CKA_EC_POINT (a DER OCTET STRING around the point, PKCS#11 v2.40 2.3.3). */
function ecSpki(curve: 'P-256' | 'P-384', pointEc: Buffer): Uint8Array {
  let point = new Uint8Array(pointEc);
  const size = curve === 'P-256' ? 65 : 97;
  if (point.byteLength !== size) {
    // DER OCTET STRING: 04 len point (short or 0x81 long form).
    const header = point[1] === 0x81 ? 3 : 2;
    if (point[0] !== TAG.OCTET_STRING || point.byteLength !== header + size) {
      throw new FleetgateError('CA_MATERIAL_INVALID', 'the token returned an unreadable CKA_EC_POINT');
    }
    point = point.subarray(header);
  }
  return seq(
    seq(encodeOid(OID_EC_PUBLIC_KEY), encodeOid(CURVE_OIDS[curve])),
    tlv(TAG.BIT_STRING, new Uint8Array([0]), point),
  );
}

/** SubjectPublicKeyInfo of an RSA key (RFC 3279 2.3.1: rsaEncryption, NULL parameters). */
function rsaSpki(modulus: Buffer, exponent: Buffer): Uint8Array {
  const int = (b: Buffer) => {
    let bytes = new Uint8Array(b);
    while (bytes.byteLength > 1 && bytes[0] === 0 && (bytes[1]! & 0x80) === 0) bytes = bytes.subarray(1);
    return tlv(TAG.INTEGER, (bytes[0]! & 0x80) !== 0 ? new Uint8Array([0, ...bytes]) : bytes);
  };
  return seq(
    seq(encodeOid('1.2.840.113549.1.1.1'), tlv(TAG.NULL)),
    tlv(TAG.BIT_STRING, new Uint8Array([0]), seq(int(modulus), int(exponent))),
  );
}
