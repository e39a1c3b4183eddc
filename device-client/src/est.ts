/**
 * EST client (RFC 7030) over node:https with the CA bundle pinned: only a server whose certificate
 * chains to that bundle is talked to, whatever the system trust store says.
 */
import https from 'node:https';
import tls from 'node:tls';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import {
  CaMismatchError,
  DeviceClientError,
  type DeviceErrorCode,
  EnrollmentError,
  isCaVerificationError,
  isNetworkError,
  ServerUnreachableError,
} from './errors.js';
import type { DeviceKey } from './keys/types.js';
import { parseUrl } from './options.js';
import { clientContext } from './tls-context.js';
import type { AttestationChallenge, AttestationChallengeRequest, AttestationExchange } from './tpm/attest.js';

export interface EstClientOptions {
  /** Base URL of the server, e.g. https://fleetgate.example:8443 (EST lives under /.well-known/est). */
  url: string;
  /** Pinned CA bundle (PEM): the only trust anchors for the server's certificate. */
  ca: string | Buffer;
  /** Deadline for a whole request (default 30 s). */
  timeoutMs?: number;
}

/** Who makes an attestation request: the token flow's headers, or the current certificate (mTLS). */
interface Caller {
  headers?: Record<string, string>;
  clientCert?: { certPem: string; chainPem: string[]; key: DeviceKey };
}

const MAX_ANSWER_BYTES = 1024 * 1024;

interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** Server codes the device can act on keep their name; see DeviceErrorCode. */
const PASS_THROUGH: Partial<Record<string, DeviceErrorCode>> = {
  TOKEN_INVALID: 'TOKEN_INVALID',
  TOKEN_EXPIRED: 'TOKEN_EXPIRED',
  TOKEN_USED: 'TOKEN_USED',
  TOKEN_DEVICE_MISMATCH: 'TOKEN_DEVICE_MISMATCH',
  DEVICE_REVOKED: 'DEVICE_REVOKED',
  CERT_REVOKED: 'DEVICE_REVOKED',
  DEVICE_DECOMMISSIONED: 'DEVICE_DECOMMISSIONED',
  CERT_EXPIRED: 'CERT_EXPIRED',
  // TPM attestation (docs/attestation.md): each names what to fix (token, manufacturer roots, TPM).
  ATTESTATION_REQUIRED: 'ATTESTATION_REQUIRED',
  TPM_EK_UNTRUSTED: 'TPM_EK_UNTRUSTED',
  TPM_ACTIVATION_FAILED: 'TPM_ACTIVATION_FAILED',
  TPM_CHALLENGE_INVALID: 'TPM_CHALLENGE_INVALID',
  TPM_ATTESTATION_INVALID: 'TPM_ATTESTATION_INVALID',
  TPM_SIGNATURE_INVALID: 'TPM_SIGNATURE_INVALID',
  TPM_KEY_MISMATCH: 'TPM_KEY_MISMATCH',
  TPM_KEY_NOT_RESIDENT: 'TPM_KEY_NOT_RESIDENT',
  TPM_EVIDENCE_MALFORMED: 'TPM_EVIDENCE_MALFORMED',
};

export function mapServerRefusal(status: number, body: Buffer): EnrollmentError {
  let serverCode: string | undefined;
  let message = body.toString('utf8').slice(0, 500);
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { code?: unknown; message?: unknown };
    if (typeof parsed.code === 'string') serverCode = parsed.code;
    if (typeof parsed.message === 'string') message = parsed.message;
  } catch {
    // not JSON: keep the text
  }
  const mapped = serverCode ? PASS_THROUGH[serverCode] : undefined;
  const code: DeviceErrorCode = mapped ?? (status >= 500 || status === 429 ? 'SERVER_ERROR' : 'ENROLLMENT_REFUSED');
  return new EnrollmentError(code, status, serverCode, message || `HTTP ${status}`);
}

/** Certificates of a base64 (or DER) PKCS#7 certs-only message, in message order. */
export function parseCertsOnly(body: Buffer): Uint8Array[] {
  const der = body[0] === 0x30 ? body : Buffer.from(body.toString('latin1').replace(/\s+/g, ''), 'base64');
  try {
    const asn = asn1js.fromBER(new Uint8Array(der));
    if (asn.offset === -1) throw new Error('not BER');
    const info = new pkijs.ContentInfo({ schema: asn.result });
    if (info.contentType !== pkijs.id_ContentType_SignedData) throw new Error(`content type ${info.contentType}`);
    const signed = new pkijs.SignedData({ schema: info.content });
    return (signed.certificates ?? [])
      .filter((c): c is pkijs.Certificate => c instanceof pkijs.Certificate)
      .map((c) => new Uint8Array(c.toSchema().toBER(false)));
  } catch (e) {
    throw new DeviceClientError('SERVER_ERROR', `the server's PKCS#7 answer is malformed: ${String(e)}`, {
      cause: e,
    });
  }
}

/** A standard base64 (RFC 4648 4) string field of 1..maxBytes bytes, decoded; else SERVER_ERROR. */
function base64Field(o: Record<string, unknown>, name: string, maxBytes: number): Buffer {
  const v = o[name];
  if (
    typeof v !== 'string' ||
    v.length > 4 * Math.ceil(maxBytes / 3) ||
    !/^(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$|^(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$/.test(
      v,
    )
  )
    throw new DeviceClientError('SERVER_ERROR', `the server's ${name} is not base64 of at most ${maxBytes} bytes`);
  const b = Buffer.from(v, 'base64');
  if (b.length === 0 || b.length > maxBytes)
    throw new DeviceClientError('SERVER_ERROR', `the server's ${name} is ${b.length} bytes`);
  return b;
}

/** HTTP Basic credentials (RFC 7617) of the device id and its factory token. */
function basicAuth(deviceId: string, token: string): string {
  return `Basic ${Buffer.from(`${deviceId}:${token}`, 'utf8').toString('base64')}`;
}

function base64Lines(der: Uint8Array): string {
  return `${(
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? []
  ).join('\r\n')}\r\n`;
}

export class EstClient {
  readonly base: URL;
  private readonly ca: string | Buffer;
  private readonly timeoutMs: number;

  constructor(options: EstClientOptions) {
    this.base = parseUrl(options.url, 'estUrl');
    if (this.base.protocol !== 'https:')
      throw new DeviceClientError('INVALID_OPTIONS', `EST needs an https URL, got ${options.url}`);
    this.ca = options.ca;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    if (!Number.isInteger(this.timeoutMs) || this.timeoutMs < 1 || this.timeoutMs > 2 ** 31 - 1)
      throw new DeviceClientError(
        'INVALID_OPTIONS',
        `estTimeoutMs must be a whole number of ms, got ${this.timeoutMs}`,
      );
  }

  private url(op: string): URL {
    return new URL(`/.well-known/est/${op}`, this.base);
  }

  /** RFC 7030 4.1: the CA certificates, as DER. */
  async cacerts(): Promise<Uint8Array[]> {
    const r = await this.request('GET', this.url('cacerts'));
    if (r.status !== 200) throw mapServerRefusal(r.status, r.body);
    return parseCertsOnly(r.body);
  }

  /** RFC 7030 4.2.1: enroll with HTTP Basic (device id : factory token). Returns the certificate DER. */
  async simpleEnroll(deviceId: string, token: string, csrDer: Uint8Array): Promise<Uint8Array> {
    const r = await this.request('POST', this.url('simpleenroll'), {
      headers: { Authorization: basicAuth(deviceId, token) },
      body: base64Lines(csrDer),
    });
    return this.certFrom(r);
  }

  /** RFC 7030 4.2.2: renew, authenticated by the current certificate as TLS client certificate. */
  async simpleReenroll(
    csrDer: Uint8Array,
    client: { certPem: string; chainPem: string[]; key: DeviceKey },
  ): Promise<Uint8Array> {
    const r = await this.request('POST', this.url('simplereenroll'), {
      body: base64Lines(csrDer),
      clientCert: client,
    });
    return this.certFrom(r);
  }

  /**
   * The two TPM attestation round trips (docs/attestation.md "Protocol"), authenticated with the
   * factory token as simpleenroll is (the token is checked, not spent): what TpmKeyStore.attest
   * needs before the enrollment's simpleenroll.
   */
  attestationExchange(deviceId: string, token: string): AttestationExchange {
    return this.attestationAs({ headers: { Authorization: basicAuth(deviceId, token) } });
  }

  /**
   * The same two round trips for a renewal (docs/attestation.md "Renewal"): authenticated by the
   * current certificate as TLS client certificate, exactly the identity simplereenroll presents
   * (for a token key: OpenSSL's pkcs11 engine), and with no Authorization header at all, since any
   * Authorization header, even an empty one, selects the token flow on the server. The server binds
   * the nonce to that exact certificate: it is good only for a simplereenroll presenting it.
   */
  renewalAttestationExchange(client: { certPem: string; chainPem: string[]; key: DeviceKey }): AttestationExchange {
    return this.attestationAs({ clientCert: client });
  }

  private attestationAs(caller: Caller): AttestationExchange {
    return {
      challenge: (req) => this.attestChallenge(caller, req),
      activate: (challengeId, secret) => this.attestActivate(caller, challengeId, secret),
    };
  }

  private async attestChallenge(caller: Caller, req: AttestationChallengeRequest): Promise<AttestationChallenge> {
    const body = {
      ekCert: req.ekCert.toString('base64'),
      ekPublic: req.ekPublic.toString('base64'),
      akPublic: req.akPublic.toString('base64'),
    };
    const r = await this.json(this.url('attest/challenge'), caller, body);
    const challengeId = r.challengeId;
    if (typeof challengeId !== 'string' || !/^[A-Za-z0-9_-]{1,128}$/.test(challengeId))
      throw new DeviceClientError('SERVER_ERROR', 'the attestation challenge has no valid challengeId');
    return { challengeId, credentialFile: base64Field(r, 'credentialFile', 4096) };
  }

  private async attestActivate(caller: Caller, challengeId: string, secret: Buffer): Promise<Buffer> {
    const r = await this.json(this.url('attest/activate'), caller, {
      challengeId,
      secret: secret.toString('base64'),
    });
    return base64Field(r, 'nonce', 64);
  }

  /** POST of a JSON body; a 200 JSON object back, or the server's refusal as an EnrollmentError. */
  private async json(url: URL, caller: Caller, body: unknown): Promise<Record<string, unknown>> {
    const r = await this.request('POST', url, {
      headers: { ...caller.headers, Accept: 'application/json' },
      ...(caller.clientCert ? { clientCert: caller.clientCert } : {}),
      body: JSON.stringify(body),
      contentType: 'application/json',
    });
    if (r.status !== 200) throw mapServerRefusal(r.status, r.body);
    let parsed: unknown;
    try {
      parsed = JSON.parse(r.body.toString('utf8'));
    } catch (e) {
      throw new DeviceClientError('SERVER_ERROR', `the server's answer to ${url.pathname} is not JSON`, { cause: e });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new DeviceClientError('SERVER_ERROR', `the server's answer to ${url.pathname} is not a JSON object`);
    return parsed as Record<string, unknown>;
  }

  private certFrom(r: HttpAnswer): Uint8Array {
    if (r.status !== 200) throw mapServerRefusal(r.status, r.body);
    const certs = parseCertsOnly(r.body);
    const first = certs[0];
    if (!first) throw new DeviceClientError('SERVER_ERROR', 'the EST answer holds no certificate');
    return first;
  }

  private request(
    method: 'GET' | 'POST',
    url: URL,
    opts: {
      headers?: Record<string, string>;
      body?: string;
      /** Default: an EST base64 PKCS#10 body (RFC 7030 4.2.1). */
      contentType?: string;
      clientCert?: { certPem: string; chainPem: string[]; key: DeviceKey };
    } = {},
  ): Promise<HttpAnswer> {
    return new Promise((resolve, reject) => {
      let secureContext: tls.SecureContext;
      try {
        secureContext = opts.clientCert
          ? clientContext(opts.clientCert.key, opts.clientCert.certPem, opts.clientCert.chainPem, this.ca)
          : tls.createSecureContext({ ca: this.ca, minVersion: 'TLSv1.2' });
      } catch (e) {
        if (e instanceof DeviceClientError) return reject(e);
        reject(new DeviceClientError('INVALID_OPTIONS', `cannot build the TLS context: ${String(e)}`, { cause: e }));
        return;
      }
      const requestOptions: https.RequestOptions & { secureContext: tls.SecureContext } = {
        method,
        agent: false,
        secureContext,
        rejectUnauthorized: true,
        headers: {
          Accept: 'application/pkcs7-mime, application/json',
          ...(opts.body !== undefined
            ? opts.contentType
              ? { 'Content-Type': opts.contentType }
              : { 'Content-Type': 'application/pkcs10', 'Content-Transfer-Encoding': 'base64' }
            : {}),
          ...opts.headers,
        },
      };
      // One deadline for the whole exchange: `timeout` of https.request only fires after that
      // long without a byte, so a server dripping its answer would hold the request for ever.
      const deadline = setTimeout(() => {
        req.destroy(Object.assign(new Error(`no complete answer within ${this.timeoutMs} ms`), { code: 'ETIMEDOUT' }));
      }, this.timeoutMs);
      deadline.unref?.();
      const fail = (e: unknown) => {
        clearTimeout(deadline);
        reject(this.transportError(e));
      };
      const req = https.request(url, requestOptions, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          // A certificate and its chain are a few KiB: a larger answer is not EST (the server
          // answered, so this is a server error, not an unreachable server).
          if (size > MAX_ANSWER_BYTES)
            req.destroy(
              new DeviceClientError('SERVER_ERROR', `the EST answer is larger than ${MAX_ANSWER_BYTES} bytes`),
            );
          else chunks.push(c);
        });
        res.on('end', () => {
          clearTimeout(deadline);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        });
        res.on('error', fail);
      });
      req.on('error', fail);
      req.end(opts.body);
    });
  }

  private transportError(e: unknown): DeviceClientError {
    if (e instanceof DeviceClientError) return e;
    const where = this.base.origin;
    if (isCaVerificationError(e)) return new CaMismatchError(where, { cause: e });
    if (isNetworkError(e)) return new ServerUnreachableError(where, { cause: e });
    return new ServerUnreachableError(where, { cause: e });
  }
}
