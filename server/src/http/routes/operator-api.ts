/**
 * Operator API under /api/v1: bearer-token auth, TypeBox-validated requests and responses
 * (documented at /docs). Thin: every handler is one use-case call plus JSON shaping.
 */
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AuditService } from '../../audit/types.js';
import type { CertificateAuthority } from '../../ca/index.js';
import type { IssuerState } from '../../ca-bootstrap.js';
import { parseDuration } from '../../config.js';
import type { ConsoleSessions } from '../../console/sessions.js';
import type { ProvisioningService, TokenView } from '../../enrollment/types.js';
import { FleetgateError } from '../../errors.js';
import {
  DEVICE_ID_PREFIX_SOURCE,
  DEVICE_ID_SOURCE,
  OPERATOR_NAME_SOURCE,
  SERIAL_INPUT_SOURCE,
} from '../../identifiers.js';
import type { DeviceView, InventoryService } from '../../inventory/types.js';
import type { OperatorService } from '../../operators/types.js';
import type { RevocationService } from '../../revocation/types.js';
import { parseRevocationReason, REVOCATION_REASON_NAMES, revocationReasonName } from '../../revocation-reasons.js';
import { type CertificateRecord, DEVICE_SORTS, KEY_TYPE_PATTERN } from '../../store/types.js';
import { actorOf, operatorAuthHook } from '../operator-auth.js';

export interface OperatorApiDeps {
  ca: CertificateAuthority;
  provisioning: ProvisioningService;
  revocation: RevocationService;
  inventory: InventoryService;
  operators: OperatorService;
  audit: AuditService;
  /** Console sessions (cookie + CSRF token) accepted besides bearer tokens. */
  sessions?: ConsoleSessions;
  /** Every issuing CA with its rollover state now (`fleetgate ca list`); absent: the one CA only. */
  caIssuers?: () => Promise<IssuerStateView[]>;
}

/** One issuing CA as GET /api/v1/ca/issuers lists it. */
export type IssuerStateView = IssuerState;

const ErrorBody = Type.Object({ code: Type.String(), message: Type.String() });
const DeviceId = Type.String({ pattern: DEVICE_ID_SOURCE, description: 'device id' });
const Serial = Type.String({ pattern: SERIAL_INPUT_SOURCE, description: 'certificate serial, hex' });
const Reason = Type.Optional(
  Type.Union([Type.String({ maxLength: 32 }), Type.Integer({ minimum: 0, maximum: 10 })], {
    description: `RFC 5280 reason: ${REVOCATION_REASON_NAMES.join(', ')} (or its number)`,
  }),
);

const CertificateJson = Type.Object({
  serial: Type.String(),
  deviceId: Type.String(),
  subject: Type.String(),
  notBefore: Type.String({ format: 'date-time' }),
  notAfter: Type.String({ format: 'date-time' }),
  status: Type.String(),
  revokedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  revocationReason: Type.Union([Type.String(), Type.Null()]),
  renewedFrom: Type.Union([Type.String(), Type.Null()]),
  keyAssurance: Type.Union([Type.Literal('tpm-attested'), Type.Literal('unattested')], {
    description: 'how the key is held, as proved at issuance (docs/attestation.md)',
  }),
  keyType: Type.String({ description: 'the certified key: ec-p256, ec-p384, ed25519, rsa-<bits> or other' }),
});
const DeviceJson = Type.Object({
  id: Type.String(),
  kind: Type.String(),
  status: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  lastSeenAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  online: Type.Boolean(),
  current: Type.Union([CertificateJson, Type.Null()]),
  certificates: Type.Optional(Type.Array(CertificateJson)),
});

function certJson(c: CertificateRecord): Static<typeof CertificateJson> {
  return {
    serial: c.serial,
    deviceId: c.deviceId,
    subject: c.subject,
    notBefore: c.notBefore.toISOString(),
    notAfter: c.notAfter.toISOString(),
    status: c.status,
    revokedAt: c.revokedAt?.toISOString() ?? null,
    revocationReason: c.revocationReason === null ? null : revocationReasonName(c.revocationReason),
    renewedFrom: c.renewedFrom,
    keyAssurance: c.keyAssurance,
    keyType: c.keyType,
  };
}

function deviceJson(d: DeviceView, withCerts: boolean): Static<typeof DeviceJson> {
  return {
    id: d.id,
    kind: d.kind,
    status: d.status,
    createdAt: d.createdAt.toISOString(),
    lastSeenAt: d.lastSeenAt?.toISOString() ?? null,
    online: d.online,
    current: d.current ? certJson(d.current) : null,
    ...(withCerts ? { certificates: d.certificates.map(certJson) } : {}),
  };
}

function reasonOf(value: string | number | undefined) {
  const reason = parseRevocationReason(value);
  if (reason === null) {
    throw new FleetgateError('BAD_REQUEST', `reason must be one of ${REVOCATION_REASON_NAMES.join(', ')}`);
  }
  return reason;
}

/**
 * Paging shared by every list (store/paging.ts): `limit` rows (default 100, 1-1000, else 400
 * BAD_REQUEST) after `cursor`, the previous page's `nextCursor` (a cursor this server did not
 * issue for this list is 400 CURSOR_INVALID). Every answer carries the exact `total` of matching
 * rows and `nextCursor` (null on the last page).
 */
const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  cursor: Type.Optional(Type.String({ minLength: 1, description: "the previous page's nextCursor (opaque)" })),
};
const PageFields = {
  total: Type.Integer({ minimum: 0, description: 'rows matching the filters, all pages together' }),
  nextCursor: Type.Union([Type.String(), Type.Null()], {
    description: 'pass as cursor for the next page; null: last page',
  }),
};

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

export async function registerOperatorApi(app: FastifyInstance, deps: OperatorApiDeps): Promise<void> {
  await app.register(
    async (api) => {
      api.addHook('onRequest', operatorAuthHook(deps.operators, deps.sessions));

      const tags = (t: string) => ({ tags: [t], security: [{ bearer: [] }] });

      const TokenBody = Type.Object(
        {
          deviceId: Type.Optional(DeviceId),
          deviceIds: Type.Optional(Type.Array(DeviceId, { minItems: 1, maxItems: 10_000 })),
          count: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
          prefix: Type.Optional(Type.String({ pattern: DEVICE_ID_PREFIX_SOURCE })),
          ttl: Type.Optional(Type.String({ maxLength: 16, description: 'duration like 90s, 15m, 24h, 30d' })),
          requireAttestation: Type.Optional(
            Type.Literal('tpm', { description: 'enroll only a TPM-attested key (docs/attestation.md)' }),
          ),
        },
        { additionalProperties: false },
      );
      const TokenList = Type.Object({
        tokens: Type.Array(Type.Object({ deviceId: Type.String(), token: Type.String(), expiresAt: Type.String() })),
      });
      api.post<{ Body: Static<typeof TokenBody> }>(
        '/tokens',
        {
          schema: {
            ...tags('tokens'),
            summary: 'Create one-time enrollment tokens (one device, a list, or a factory batch)',
            body: TokenBody,
            response: { 201: TokenList, ...errors },
          },
        },
        async (request, reply) => {
          const b = request.body;
          const forms = [
            b.deviceId !== undefined,
            b.deviceIds !== undefined,
            b.count !== undefined || b.prefix !== undefined,
          ];
          if (forms.filter(Boolean).length !== 1 || (b.count === undefined) !== (b.prefix === undefined)) {
            throw new FleetgateError('BAD_REQUEST', 'give exactly one of deviceId, deviceIds, or count with prefix');
          }
          let ttlMs: number | undefined;
          if (b.ttl !== undefined) {
            const ms = parseDuration(b.ttl);
            if (ms === null || ms > 365 * 86_400_000)
              throw new FleetgateError('BAD_REQUEST', 'ttl must be a duration like 24h, at most 365d');
            ttlMs = ms;
          }
          const req =
            b.deviceId !== undefined
              ? { deviceIds: [b.deviceId] }
              : b.deviceIds !== undefined
                ? { deviceIds: b.deviceIds }
                : { count: b.count as number, prefix: b.prefix as string };
          const tokens = await deps.provisioning.createTokens(req, {
            actor: actorOf(request),
            ...(ttlMs ? { ttlMs } : {}),
            ...(b.requireAttestation ? { requireAttestation: b.requireAttestation } : {}),
          });
          return reply.status(201).send({
            tokens: tokens.map((t) => ({ deviceId: t.deviceId, token: t.token, expiresAt: t.expiresAt.toISOString() })),
          });
        },
      );

      const TokenJson = Type.Object({
        id: Type.String(),
        deviceId: Type.String(),
        state: Type.Union([Type.Literal('unused'), Type.Literal('expired'), Type.Literal('used')]),
        createdAt: Type.String(),
        expiresAt: Type.String(),
        usedAt: Type.Union([Type.String(), Type.Null()]),
        createdBy: Type.String(),
        requireAttestation: Type.Union([Type.Literal('tpm'), Type.Null()]),
      });
      const tokenJson = (t: TokenView) => ({
        ...t,
        createdAt: t.createdAt.toISOString(),
        expiresAt: t.expiresAt.toISOString(),
        usedAt: t.usedAt?.toISOString() ?? null,
      });
      const TokenQuery = Type.Object(
        {
          deviceId: Type.Optional(DeviceId),
          state: Type.Optional(Type.Union([Type.Literal('unused'), Type.Literal('expired'), Type.Literal('used')])),
          ...PageQuery,
        },
        { additionalProperties: false },
      );
      api.get<{ Querystring: Static<typeof TokenQuery> }>(
        '/tokens',
        {
          schema: {
            ...tags('tokens'),
            summary: 'List enrollment tokens, newest first (never the secret): unused, expired or used',
            querystring: TokenQuery,
            response: { 200: Type.Object({ tokens: Type.Array(TokenJson), ...PageFields }), ...errors },
          },
        },
        async (request) => {
          const q = request.query;
          const page = await deps.provisioning.pageTokens({
            limit: q.limit ?? 100,
            cursor: q.cursor,
            ...(q.deviceId !== undefined ? { deviceId: q.deviceId } : {}),
            ...(q.state !== undefined ? { state: q.state } : {}),
          });
          return { tokens: page.items.map(tokenJson), total: page.total, nextCursor: page.nextCursor };
        },
      );
      const TokenParams = Type.Object({ id: Type.String({ format: 'uuid' }) });
      api.post<{ Params: Static<typeof TokenParams> }>(
        '/tokens/:id/revoke',
        {
          schema: {
            ...tags('tokens'),
            summary: 'Revoke (delete) an unused enrollment token; a used one is refused (409)',
            params: TokenParams,
            response: { 200: TokenJson, ...errors },
          },
        },
        async (request) =>
          tokenJson(await deps.provisioning.revokeToken(request.params.id, { actor: actorOf(request) })),
      );

      const ListQuery = Type.Object(
        {
          status: Type.Optional(
            Type.Union([
              Type.Literal('active'),
              Type.Literal('revoked'),
              Type.Literal('reprovisioning'),
              Type.Literal('decommissioned'),
            ]),
          ),
          prefix: Type.Optional(
            Type.String({ pattern: DEVICE_ID_PREFIX_SOURCE, description: 'only ids starting with this (byte-wise)' }),
          ),
          online: Type.Optional(Type.Boolean({ description: 'only devices connected (true) or not (false)' })),
          kind: Type.Optional(Type.Union([Type.Literal('device'), Type.Literal('service')])),
          keyType: Type.Optional(
            Type.String({
              pattern: KEY_TYPE_PATTERN.source,
              description:
                'only devices whose current certificate (newest unrevoked, unexpired) has this key type: ec-p256, ec-p384, ed25519, rsa-<bits> (rsa-2048, rsa-3072, ...) or other',
            }),
          ),
          sort: Type.Optional(
            Type.Union(
              DEVICE_SORTS.map((s) => Type.Literal(s)),
              {
                default: 'id',
                description:
                  'order: id (byte order), createdAt (enrollment), lastSeenAt, certNotAfter (current certificate expiry); a leading - reverses it. Rows without a value come last; ties by id. A cursor only continues the order it came from (else 400 CURSOR_INVALID)',
              },
            ),
          ),
          ...PageQuery,
          offset: Type.Optional(
            Type.Integer({ minimum: 0, default: 0, description: 'rows to skip (prefer cursor: stable under inserts)' }),
          ),
        },
        { additionalProperties: false },
      );
      api.get<{ Querystring: Static<typeof ListQuery> }>(
        '/devices',
        {
          schema: {
            ...tags('devices'),
            summary: 'List devices with their current certificate: search, filter, sort (keyset paging)',
            querystring: ListQuery,
            response: { 200: Type.Object({ devices: Type.Array(DeviceJson), ...PageFields }), ...errors },
          },
        },
        async (request) => {
          const q = request.query;
          if (q.cursor !== undefined && (q.offset ?? 0) !== 0) {
            throw new FleetgateError('BAD_REQUEST', 'give a cursor or an offset, not both');
          }
          const page = await deps.inventory.pageDevices({
            limit: q.limit ?? 100,
            offset: q.offset ?? 0,
            cursor: q.cursor,
            ...(q.status ? { status: q.status } : {}),
            ...(q.prefix !== undefined ? { prefix: q.prefix } : {}),
            ...(q.online !== undefined ? { online: q.online } : {}),
            ...(q.kind !== undefined ? { kind: q.kind } : {}),
            ...(q.keyType !== undefined ? { keyType: q.keyType } : {}),
            ...(q.sort !== undefined ? { sort: q.sort } : {}),
          });
          return {
            devices: page.items.map((d) => deviceJson(d, false)),
            total: page.total,
            nextCursor: page.nextCursor,
          };
        },
      );

      const IdParams = Type.Object({ id: DeviceId });
      api.get<{ Params: Static<typeof IdParams> }>(
        '/devices/:id',
        {
          schema: {
            ...tags('devices'),
            summary: 'One device with all its certificates',
            params: IdParams,
            response: { 200: DeviceJson, ...errors },
          },
        },
        async (request) => deviceJson(await deps.inventory.getDevice(request.params.id), true),
      );

      const RevokeBody = Type.Object({ reason: Reason }, { additionalProperties: false });
      api.post<{ Params: Static<typeof IdParams>; Body: Static<typeof RevokeBody> }>(
        '/devices/:id/revoke',
        {
          schema: {
            ...tags('revocation'),
            summary: 'Revoke every valid certificate of a device (durable before the answer)',
            params: IdParams,
            body: Type.Optional(RevokeBody),
            response: { 200: Type.Object({ deviceId: Type.String(), revoked: Type.Array(Type.String()) }), ...errors },
          },
        },
        async (request) => {
          const reason = reasonOf(request.body?.reason);
          const { serials } = await deps.revocation.revokeDevice(request.params.id, reason, actorOf(request));
          return { deviceId: request.params.id, revoked: serials };
        },
      );

      // The reason is checked in words by the use case (1-500 characters, no control characters).
      const LifecycleBody = Type.Object(
        { reason: Type.String({ description: 'why (1-500 characters, audited)' }) },
        { additionalProperties: false },
      );
      const ReprovisionBody = Type.Object(
        {
          reason: Type.String({ description: 'why (1-500 characters, audited)' }),
          ttl: Type.Optional(Type.String({ maxLength: 16, description: "the token's lifetime, like 24h" })),
        },
        { additionalProperties: false },
      );
      api.post<{ Params: Static<typeof IdParams>; Body: Static<typeof ReprovisionBody> }>(
        '/devices/:id/reprovision',
        {
          schema: {
            ...tags('devices'),
            summary:
              'Let a revoked device back in: exactly one new enrollment token, shown once (old certificates stay revoked)',
            params: IdParams,
            body: ReprovisionBody,
            response: {
              201: Type.Object({ deviceId: Type.String(), token: Type.String(), expiresAt: Type.String() }),
              ...errors,
            },
          },
        },
        async (request, reply) => {
          let ttlMs: number | undefined;
          if (request.body.ttl !== undefined) {
            const ms = parseDuration(request.body.ttl);
            if (ms === null || ms > 365 * 86_400_000)
              throw new FleetgateError('BAD_REQUEST', 'ttl must be a duration like 24h, at most 365d');
            ttlMs = ms;
          }
          const t = await deps.provisioning.reprovisionDevice(request.params.id, request.body.reason, {
            actor: actorOf(request),
            ...(ttlMs ? { ttlMs } : {}),
          });
          return reply.status(201).send({ deviceId: t.deviceId, token: t.token, expiresAt: t.expiresAt.toISOString() });
        },
      );
      api.post<{ Params: Static<typeof IdParams>; Body: Static<typeof LifecycleBody> }>(
        '/devices/:id/decommission',
        {
          schema: {
            ...tags('devices'),
            summary:
              'Retire a device for good: revoke its certificates (cessationOfOperation), refuse every future token; history kept',
            params: IdParams,
            body: LifecycleBody,
            response: {
              200: Type.Object({ deviceId: Type.String(), status: Type.String(), revoked: Type.Array(Type.String()) }),
              ...errors,
            },
          },
        },
        async (request) => {
          const { serials } = await deps.revocation.decommissionDevice(
            request.params.id,
            request.body.reason,
            actorOf(request),
          );
          return { deviceId: request.params.id, status: 'decommissioned', revoked: serials };
        },
      );

      const SerialParams = Type.Object({ serial: Serial });
      api.post<{ Params: Static<typeof SerialParams>; Body: Static<typeof RevokeBody> }>(
        '/certificates/:serial/revoke',
        {
          schema: {
            ...tags('revocation'),
            summary: 'Revoke one certificate by serial',
            params: SerialParams,
            body: Type.Optional(RevokeBody),
            response: { 200: Type.Object({ serial: Type.String(), status: Type.String() }), ...errors },
          },
        },
        async (request) => {
          const serial = request.params.serial.toLowerCase();
          await deps.revocation.revokeCertificate(serial, reasonOf(request.body?.reason), actorOf(request));
          return { serial, status: 'revoked' };
        },
      );

      const ExpiringQuery = Type.Object(
        { days: Type.Integer({ minimum: 1, maximum: 3650 }), ...PageQuery },
        { additionalProperties: false },
      );
      api.get<{ Querystring: Static<typeof ExpiringQuery> }>(
        '/certificates/expiring',
        {
          schema: {
            ...tags('certificates'),
            summary: 'Valid certificates expiring within N days, soonest first',
            querystring: ExpiringQuery,
            response: { 200: Type.Object({ certificates: Type.Array(CertificateJson), ...PageFields }), ...errors },
          },
        },
        async (request) => {
          const q = request.query;
          const page = await deps.inventory.pageExpiring(q.days, { limit: q.limit ?? 100, cursor: q.cursor });
          return { certificates: page.items.map(certJson), total: page.total, nextCursor: page.nextCursor };
        },
      );

      const OperatorJson = Type.Object({
        id: Type.String(),
        name: Type.String(),
        createdAt: Type.String(),
        revokedAt: Type.Union([Type.String(), Type.Null()]),
      });
      const OperatorQuery = Type.Object(PageQuery, { additionalProperties: false });
      api.get<{ Querystring: Static<typeof OperatorQuery> }>(
        '/operators',
        {
          schema: {
            ...tags('operators'),
            summary: 'List operator credentials, oldest first',
            querystring: OperatorQuery,
            response: { 200: Type.Object({ operators: Type.Array(OperatorJson), ...PageFields }), ...errors },
          },
        },
        async (request) => {
          const page = await deps.operators.page({ limit: request.query.limit ?? 100, cursor: request.query.cursor });
          return {
            operators: page.items.map((o) => ({
              id: o.id,
              name: o.name,
              createdAt: o.createdAt.toISOString(),
              revokedAt: o.revokedAt?.toISOString() ?? null,
            })),
            total: page.total,
            nextCursor: page.nextCursor,
          };
        },
      );
      const OperatorBody = Type.Object(
        { name: Type.String({ pattern: OPERATOR_NAME_SOURCE }) },
        { additionalProperties: false },
      );
      api.post<{ Body: Static<typeof OperatorBody> }>(
        '/operators',
        {
          schema: {
            ...tags('operators'),
            summary: 'Create an operator credential (the token is shown once)',
            body: OperatorBody,
            response: { 201: Type.Object({ id: Type.String(), name: Type.String(), token: Type.String() }), ...errors },
          },
        },
        async (request, reply) =>
          reply.status(201).send(await deps.operators.create(request.body.name, actorOf(request))),
      );
      const OperatorParams = Type.Object({
        id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' }),
      });
      api.delete<{ Params: Static<typeof OperatorParams> }>(
        '/operators/:id',
        {
          schema: {
            ...tags('operators'),
            summary: 'Revoke an operator credential',
            params: OperatorParams,
            response: { 200: Type.Object({ id: Type.String(), status: Type.String() }), ...errors },
          },
        },
        async (request) => {
          await deps.operators.revoke(request.params.id, actorOf(request));
          return { id: request.params.id, status: 'revoked' };
        },
      );

      const AuditQuery = Type.Object(
        {
          afterSeq: Type.Optional(Type.Integer({ minimum: 0, description: 'start after this seq (or use cursor)' })),
          ...PageQuery,
        },
        { additionalProperties: false },
      );
      api.get<{ Querystring: Static<typeof AuditQuery> }>(
        '/audit',
        {
          schema: {
            ...tags('audit'),
            summary: 'Audit events in order',
            querystring: AuditQuery,
            response: {
              200: Type.Object({
                events: Type.Array(
                  Type.Object({
                    seq: Type.Integer(),
                    at: Type.String(),
                    actor: Type.String(),
                    action: Type.String(),
                    subject: Type.Union([Type.String(), Type.Null()]),
                    details: Type.Record(Type.String(), Type.Unknown()),
                    hash: Type.String(),
                  }),
                ),
                ...PageFields,
              }),
              ...errors,
            },
          },
        },
        async (request) => {
          const q = request.query;
          const page = await deps.audit.page({
            limit: q.limit ?? 100,
            cursor: q.cursor,
            ...(q.afterSeq !== undefined ? { afterSeq: q.afterSeq } : {}),
          });
          return {
            total: page.total,
            nextCursor: page.nextCursor,
            events: page.items.map((e) => ({
              seq: e.seq,
              at: e.at.toISOString(),
              actor: e.actor,
              action: e.action,
              subject: e.subject,
              details: e.details,
              hash: e.hash,
            })),
          };
        },
      );
      api.get(
        '/audit/verify',
        {
          schema: {
            ...tags('audit'),
            summary: 'Walk the hash chain and report the first broken link',
            response: {
              200: Type.Object({
                ok: Type.Boolean(),
                count: Type.Integer(),
                brokenAtSeq: Type.Optional(Type.Integer()),
                reason: Type.Optional(Type.String()),
              }),
              ...errors,
            },
          },
        },
        async () => deps.audit.verify(),
      );

      api.get(
        '/ca',
        {
          schema: {
            ...tags('ca'),
            summary: 'The CA certificates and fingerprints',
            response: {
              200: Type.Object({
                rootPem: Type.String(),
                issuingPem: Type.String(),
                rootFingerprint: Type.String(),
                issuingFingerprint: Type.String(),
              }),
              ...errors,
            },
          },
        },
        async () => ({
          rootPem: deps.ca.rootCert.toString('pem'),
          issuingPem: deps.ca.issuingCert.toString('pem'),
          rootFingerprint: deps.ca.rootFingerprint,
          issuingFingerprint: deps.ca.issuingFingerprint,
        }),
      );

      // Issuing-CA rollover (docs/hsm.md): every issuing CA and whether it issues (active),
      // is still answered for (previous) or has nothing valid left (retired).
      api.get(
        '/ca/issuers',
        {
          schema: {
            ...tags('ca'),
            summary: 'Every issuing CA with its rollover state',
            response: {
              200: Type.Object({
                issuers: Type.Array(
                  Type.Object({
                    generation: Type.Integer(),
                    fingerprint: Type.String(),
                    subject: Type.String(),
                    serial: Type.String(),
                    notBefore: Type.String({ format: 'date-time' }),
                    notAfter: Type.String({ format: 'date-time' }),
                    keyLocation: Type.String({ description: '"file" or the key\'s pkcs11: URI' }),
                    state: Type.Union([Type.Literal('active'), Type.Literal('previous'), Type.Literal('retired')]),
                    lastCertificateNotAfter: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
                  }),
                ),
              }),
              ...errors,
            },
          },
        },
        async () => {
          const list = deps.caIssuers
            ? await deps.caIssuers()
            : [
                {
                  generation: deps.ca.generation,
                  fingerprint: deps.ca.issuingFingerprint,
                  subject: deps.ca.issuingCert.subject,
                  serial: deps.ca.issuingCert.serialNumber.toLowerCase(),
                  notBefore: deps.ca.issuingCert.notBefore,
                  notAfter: deps.ca.issuingCert.notAfter,
                  keyLocation: deps.ca.keyBackend,
                  state: 'active' as const,
                  lastCertificateNotAfter: null,
                },
              ];
          return {
            issuers: list.map((i) => ({
              ...i,
              notBefore: i.notBefore.toISOString(),
              notAfter: i.notAfter.toISOString(),
              lastCertificateNotAfter: i.lastCertificateNotAfter?.toISOString() ?? null,
            })),
          };
        },
      );
    },
    { prefix: '/api/v1' },
  );
}
