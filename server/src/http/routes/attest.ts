/**
 * TPM attestation's EST extension (docs/attestation.md): two JSON routes a device calls before
 * simpleenroll, authenticated with Basic `device id : enrollment token` as simpleenroll is (the
 * token is checked, not spent). Transport only: the use cases are in enrollment/attestation.ts.
 *
 *   POST /.well-known/est/attest/challenge  EK certificate, EK and AK TPM2B_PUBLIC -> MakeCredential
 *   POST /.well-known/est/attest/activate   the activated secret -> nonce for TPM2_Certify
 *
 * The same two routes serve a renewal (simplereenroll with fresh evidence): a request without an
 * Authorization header, over a TLS connection with the device's current certificate as client
 * certificate, is authenticated by that certificate (checked as simplereenroll checks it) and
 * the AK is bound to it. With an Authorization header the token flow applies, whatever
 * certificate the connection has; with neither: AUTH_REQUIRED.
 *
 * Byte strings travel as standard base64 (RFC 4648 section 4) inside JSON; their lengths are
 * bounded by the schema before any decoding (a TPM2B_PUBLIC is at most a few hundred bytes, an EK
 * certificate a few KiB).
 */
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { tpm2ToolsCredentialFile } from '../../attest/index.js';
import type { AttestationSteps } from '../../enrollment/attestation.js';
import { UnauthenticatedFailureLog, unauthenticatedReason } from '../../enrollment/auth-failures.js';
import { isFleetgateError } from '../../errors.js';
import type { EstLimiter } from '../est-limits.js';
import { requireMediaType } from '../media-type.js';
import { clientCertificate, parseBasicAuth } from './est.js';

const ATTEST_BODY_LIMIT = 32 * 1024;

/** Standard base64 of at most `maxBytes` bytes (the length bound is on the text, before decoding). */
const B64 = (maxBytes: number, description: string) =>
  Type.String({
    pattern: '^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$',
    minLength: 4,
    maxLength: 4 * Math.ceil(maxBytes / 3),
    description,
  });

const ChallengeBody = Type.Object(
  {
    ekCert: B64(8192, 'EK certificate (DER) read from the TPM NV index 0x01C00002 (RSA) or 0x01C0000A (ECC)'),
    ekIntermediates: Type.Optional(
      Type.Array(B64(8192, 'issuing CA certificate (DER)'), {
        maxItems: 4,
        description: 'issuing CAs of the EK certificate',
      }),
    ),
    ekPublic: B64(1024, 'TPM2B_PUBLIC of the EK'),
    akPublic: B64(1024, 'TPM2B_PUBLIC of the attestation key'),
  },
  { additionalProperties: false },
);
const ChallengeReply = Type.Object({
  challengeId: Type.String(),
  credentialBlob: Type.String({ description: 'TPM2B_ID_OBJECT contents, base64' }),
  encryptedSecret: Type.String({ description: 'TPM2B_ENCRYPTED_SECRET contents, base64' }),
  credentialFile: Type.String({ description: 'the file tpm2_activatecredential -i reads, base64' }),
  expiresAt: Type.String(),
});
const ActivateBody = Type.Object(
  {
    challengeId: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$', description: 'from the challenge' }),
    secret: B64(64, 'the secret TPM2_ActivateCredential recovered'),
  },
  { additionalProperties: false },
);
const ActivateReply = Type.Object({
  nonce: Type.String({ description: 'qualifying data for TPM2_Certify of the device key, base64' }),
  expiresAt: Type.String(),
});
const ErrorBody = Type.Object({ code: Type.String(), message: Type.String() });
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 415: ErrorBody, 429: ErrorBody };

export interface AttestRouteDeps {
  steps: AttestationSteps;
  /** The EST rate limits (per address, and per device id on failed authentication). */
  limiter?: EstLimiter | undefined;
  /** Counts unauthenticated failures, as for simpleenroll. */
  unauthenticated?: ((reason: NonNullable<ReturnType<typeof unauthenticatedReason>>) => void) | undefined;
}

const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));

/**
 * Who calls: Basic `device id : token` (enrollment), else the TLS client certificate (renewal).
 * An empty Authorization header counts as sent (parseBasicAuth refuses it: AUTH_REQUIRED).
 */
function callerOf(
  request: FastifyRequest,
): { kind: 'token'; deviceId: string; token: string } | { kind: 'certificate'; der: Uint8Array } {
  const header = request.headers.authorization;
  if (header === undefined) {
    const der = clientCertificate(request);
    if (der) return { kind: 'certificate', der };
  }
  const { user, password } = parseBasicAuth(header);
  return { kind: 'token', deviceId: user, token: password };
}

export function registerAttestRoutes(app: FastifyInstance, deps: AttestRouteDeps): void {
  const jsonOnly = requireMediaType('application/json');
  const limited = deps.limiter ? [deps.limiter.hook(true)] : [];
  const settle = deps.limiter ? { onResponse: deps.limiter.settle } : {};
  const unauthenticatedLog = new UnauthenticatedFailureLog({
    log: (fields, message) => app.log.warn({ ...fields, route: 'attest' }, message),
  });
  /** The outcome feeds the per-device limit (failed authentications) and the unauthenticated log. */
  const observe = async <T>(request: FastifyRequest, work: () => Promise<T>): Promise<T> => {
    try {
      const r = await work();
      deps.limiter?.outcome(request, 'ok');
      return r;
    } catch (e) {
      deps.limiter?.outcome(request, isFleetgateError(e) ? e.code : 'INTERNAL');
      const reason = unauthenticatedReason(e);
      if (reason) {
        const renewal = request.headers.authorization === undefined && clientCertificate(request) !== null;
        unauthenticatedLog.record(renewal ? 'reenroll' : 'enroll', reason);
        deps.unauthenticated?.(reason);
      }
      throw e;
    }
  };
  const schema = (summary: string) => ({ tags: ['est'], summary });

  app.post<{ Body: Static<typeof ChallengeBody> }>(
    '/.well-known/est/attest/challenge',
    {
      onRequest: [...limited, jsonOnly],
      ...settle,
      bodyLimit: ATTEST_BODY_LIMIT,
      schema: {
        ...schema(
          'TPM attestation 1: EK certificate + EK and AK public areas -> TPM2_MakeCredential challenge (Basic device id:token, or the current certificate for a renewal)',
        ),
        body: ChallengeBody,
        response: { 200: ChallengeReply, ...errors },
      },
    },
    async (request, reply) => {
      const c = await observe(request, async () => {
        const caller = callerOf(request);
        const b = request.body;
        const step = {
          ekCert: b64(b.ekCert),
          ekIntermediates: (b.ekIntermediates ?? []).map(b64),
          ekPublic: b64(b.ekPublic),
          akPublic: b64(b.akPublic),
        };
        return caller.kind === 'certificate'
          ? deps.steps.renewalChallenge({ clientCertDer: caller.der, ...step })
          : deps.steps.challenge({ deviceId: caller.deviceId, token: caller.token, ...step });
      });
      return reply.send({
        challengeId: c.challengeId,
        credentialBlob: c.credentialBlob.toString('base64'),
        encryptedSecret: c.encryptedSecret.toString('base64'),
        credentialFile: tpm2ToolsCredentialFile(c).toString('base64'),
        expiresAt: c.expiresAt.toISOString(),
      });
    },
  );

  app.post<{ Body: Static<typeof ActivateBody> }>(
    '/.well-known/est/attest/activate',
    {
      onRequest: [...limited, jsonOnly],
      ...settle,
      bodyLimit: ATTEST_BODY_LIMIT,
      schema: {
        ...schema(
          'TPM attestation 2: the activated secret -> nonce for TPM2_Certify (then simpleenroll or simplereenroll)',
        ),
        body: ActivateBody,
        response: { 200: ActivateReply, ...errors },
      },
    },
    async (request, reply) => {
      const r = await observe(request, async () => {
        const caller = callerOf(request);
        const step = { challengeId: request.body.challengeId, secret: b64(request.body.secret) };
        return caller.kind === 'certificate'
          ? deps.steps.renewalActivate({ clientCertDer: caller.der, ...step })
          : deps.steps.activate({ deviceId: caller.deviceId, token: caller.token, ...step });
      });
      return reply.send({ nonce: r.nonce.toString('base64'), expiresAt: r.expiresAt.toISOString() });
    },
  );
}
