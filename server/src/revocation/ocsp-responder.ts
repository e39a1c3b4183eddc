/**
 * OCSP (RFC 6960) answers from the store, signed by the issuing CA (ca/respondOcsp).
 *
 * Status per serial:
 *   - not in the store                       -> unknown (section 2.2: "does not know about")
 *   - revoked                                -> revoked, with revocationTime and reason
 *   - valid, even if already past notAfter   -> good
 * Decision on expired certificates: "good" (section 2.2) states only that the certificate is not
 * revoked; expiry is for the relying party to check against notAfter, which it must do anyway.
 * Reporting an expired certificate as "revoked" would invent a revocation time and reason that
 * disagree with the CRL, so we do not. A revoked certificate stays "revoked" after it expires
 * (RFC 6960 4.4.4 allows answering for expired certificates; we keep every certificate row).
 *
 * Responses are valid for `validityMs` (nextUpdate = thisUpdate + validity; default 1 h).
 *
 * Caching (RFC 5019 section 6, "pre-produced responses"): a request without a nonce gets the
 * bytes signed for an earlier request naming the same certificates, for as long as that answer
 * is fresh (at most OCSP_CACHE_MAX_AGE_MS, never past its nextUpdate). A request with an RFC 8954
 * nonce is always signed afresh, since its nonce must be echoed. A revocation drops every kept
 * answer about the certificate at once: the revocation use cases call invalidate() before they
 * return, and the store's change events (PostgreSQL LISTEN/NOTIFY across processes, the same
 * events the CRL publisher and the broker's revocation watcher use) do it on every other node. An
 * answer being built while a revocation arrives is not kept (epoch check), so a "good" read just
 * before the revocation cannot be cached after it. Memory is bounded: at most
 * DEFAULT_OCSP_CACHE_ENTRIES answers (least recently used go first), and answers naming an
 * unknown serial are never kept, so invented serials cannot fill it.
 *
 * Load: building a fresh answer (status lookups and a signature) takes one of `maxInFlight`
 * slots; with none free the request gets tryLater (RFC 6960 4.2.1) at once, which keeps the event
 * loop, and so /healthz and EST, responsive under a flood from many addresses. The per-address
 * rate limit sits in front, in the HTTP route.
 */
import { type CertificateAuthority, type OcspCertStatus, respondOcsp } from '../ca/index.js';
import type { OcspResponseCache } from '../ca/ocsp.js';
import type { Clock } from '../enrollment/context.js';
import type { Store } from '../store/types.js';
import { signedBy } from './crl-urls.js';

export const DEFAULT_OCSP_VALIDITY_MS = 3_600_000;
/** Answers kept at most (one answer for one certificate is about 1 KiB with the issuing CA's certificate). */
export const DEFAULT_OCSP_CACHE_ENTRIES = 10_000;
/**
 * Longest a kept answer is served, even if its nextUpdate is later: bounds how long a lost
 * change notification (a dropped LISTEN connection) could keep serving a stale "good".
 */
export const OCSP_CACHE_MAX_AGE_MS = 5 * 60_000;
/** Fresh answers built at once; more get tryLater. */
export const DEFAULT_OCSP_MAX_IN_FLIGHT = 8;

/** What the OCSP responder reports to metrics. */
export interface OcspObserver {
  /** A nonce-less request answered from the cache (hit) or built afresh (miss). */
  cache(result: 'hit' | 'miss'): void;
  /** A request answered tryLater: over its address's rate (rate) or no slot free (busy). */
  limited(reason: 'rate' | 'busy'): void;
}

interface Entry {
  der: Uint8Array;
  serials: readonly string[];
  expiresAt: number;
}

/** The bounded, revocation-aware response cache (see the module comment). */
export class OcspCache implements OcspResponseCache {
  private readonly entries = new Map<string, Entry>();
  private readonly bySerial = new Map<string, Set<string>>();
  private epoch = 0;

  constructor(
    private readonly opts: {
      now: Clock;
      maxEntries?: number | undefined;
      maxAgeMs?: number | undefined;
      observer?: OcspObserver | undefined;
    },
  ) {}

  get size(): number {
    return this.entries.size;
  }

  lookup(key: string): ReturnType<OcspResponseCache['lookup']> {
    const now = this.opts.now().getTime();
    const entry = this.entries.get(key);
    if (entry !== undefined) {
      if (now < entry.expiresAt) {
        // Least recently used order: a hit moves the entry to the end.
        this.entries.delete(key);
        this.entries.set(key, entry);
        this.opts.observer?.cache('hit');
        return { der: entry.der };
      }
      this.remove(key, entry);
    }
    this.opts.observer?.cache('miss');
    const epoch = this.epoch;
    return {
      keep: (der, serials, nextUpdate) => {
        // A revocation arrived while this answer was built: it may say "good" for it. Not kept.
        if (this.epoch !== epoch) return;
        const at = this.opts.now().getTime();
        const expiresAt = Math.min(at + (this.opts.maxAgeMs ?? OCSP_CACHE_MAX_AGE_MS), nextUpdate.getTime());
        if (expiresAt <= at) return;
        const old = this.entries.get(key);
        if (old !== undefined) this.remove(key, old);
        this.entries.set(key, { der, serials, expiresAt });
        for (const serial of serials) {
          let keys = this.bySerial.get(serial);
          if (keys === undefined) {
            keys = new Set();
            this.bySerial.set(serial, keys);
          }
          keys.add(key);
        }
        const max = this.opts.maxEntries ?? DEFAULT_OCSP_CACHE_ENTRIES;
        for (const [oldest, e] of this.entries) {
          if (this.entries.size <= max) break;
          this.remove(oldest, e);
        }
      },
    };
  }

  /** Drops every kept answer about these certificates (lower-case hex serials), at once. */
  invalidate(serials: Iterable<string>): void {
    this.epoch += 1;
    for (const serial of serials) {
      const keys = this.bySerial.get(serial.toLowerCase());
      if (keys === undefined) continue;
      for (const key of [...keys]) {
        const entry = this.entries.get(key);
        if (entry !== undefined) this.remove(key, entry);
      }
    }
  }

  private remove(key: string, entry: Entry): void {
    this.entries.delete(key);
    for (const serial of entry.serials) {
      const keys = this.bySerial.get(serial);
      keys?.delete(key);
      if (keys?.size === 0) this.bySerial.delete(serial);
    }
  }
}

/**
 * The status of a certificate by serial, as `issuer` signed it: a serial another issuing CA of
 * the fleet signed is not this CA's to answer for (unknown). Rows from before rollover carry no
 * issuer: the first issuing CA (generation 1) signed them.
 */
export function ocspLookup(
  store: Store,
): (
  serialHex: string,
  issuer?: Pick<CertificateAuthority, 'issuingFingerprint' | 'generation'>,
) => Promise<OcspCertStatus> {
  return async (serialHex, issuer) => {
    const cert = await store.getCertificate(serialHex.toLowerCase());
    if (!cert) return { status: 'unknown' };
    if (issuer !== undefined && !signedBy(cert, issuer)) return { status: 'unknown' };
    if (cert.status === 'revoked') {
      return { status: 'revoked', revokedAt: cert.revokedAt ?? cert.issuedAt, reason: cert.revocationReason ?? 0 };
    }
    return { status: 'good' };
  };
}

export interface OcspResponder {
  respond(requestDer: Uint8Array): Promise<Uint8Array>;
  /** Revoked certificates: their kept answers go at once. */
  invalidate(serials: Iterable<string>): void;
}

export function createOcspResponder(deps: {
  store: Store;
  ca: CertificateAuthority;
  now: Clock;
  validityMs?: number | undefined;
  cacheEntries?: number | undefined;
  maxInFlight?: number | undefined;
  observer?: OcspObserver | undefined;
}): OcspResponder {
  const lookup = ocspLookup(deps.store);
  const validityMs = deps.validityMs ?? DEFAULT_OCSP_VALIDITY_MS;
  const cache =
    deps.cacheEntries === 0
      ? undefined
      : new OcspCache({ now: deps.now, maxEntries: deps.cacheEntries, observer: deps.observer });
  const maxInFlight = deps.maxInFlight ?? DEFAULT_OCSP_MAX_IN_FLIGHT;
  let inFlight = 0;
  const release = () => {
    inFlight -= 1;
  };
  const admit = (): (() => void) | null => {
    if (maxInFlight > 0 && inFlight >= maxInFlight) {
      deps.observer?.limited('busy');
      return null;
    }
    inFlight += 1;
    return release;
  };
  return {
    respond: (requestDer) => respondOcsp(deps.ca, requestDer, lookup, { now: deps.now(), validityMs, cache, admit }),
    invalidate: (serials) => cache?.invalidate(serials),
  };
}
