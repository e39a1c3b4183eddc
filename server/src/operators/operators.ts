/**
 * Operator credentials: bearer tokens `fgo_<base64url of 32 random bytes>` for the HTTP API and
 * the CLI. Only SHA-256 hashes are stored; authentication is a lookup by hash (so no secret is
 * ever compared byte by byte), and a revoked credential never authenticates. Every change is
 * audited with the acting operator (`operator:<name>`).
 *
 * First start (`ensureAdmin(file)`): when the store holds no active operator credential, an
 * `admin` credential is created and its token written to `file` (0600, atomic, never overwriting:
 * data-dir.ts writeNew). The file is written BEFORE the credential is stored: if storing fails,
 * the next start finds the file and adopts the token in it, so a crash between the two steps never
 * leaves a credential nobody holds. When an active credential exists, nothing is created - even if
 * the file is missing (the return value says so; the caller logs it): a lost file is not a reason
 * to mint a new admin.
 *
 * Never locked out: the last active credential cannot be revoked (create another first), and if
 * every credential still ended up revoked (two revocations racing), the next start creates a new
 * admin credential, once the file holding the revoked token has been moved away. Whoever can start
 * the server on this data dir holds the CA keys anyway.
 */
import { randomUUID } from 'node:crypto';
import { type Actor, type AuditService, actorString } from '../audit/types.js';
import { isTooOpen, readOptional, writeNew } from '../data-dir.js';
import { printable } from '../enrollment/context.js';
import { hashSecret, looksLikeSecret, newSecret, OPERATOR_TOKEN_PREFIX } from '../enrollment/secrets.js';
import { FleetgateError, isFleetgateError } from '../errors.js';
import { isValidDeviceId } from '../identifiers.js';
import type { Store } from '../store/types.js';
import type { OperatorService } from './types.js';

export const ADMIN_OPERATOR_NAME = 'admin';
const SYSTEM_ACTOR = 'system:fleetgate';

export type EnsureAdminResult =
  | { created: true; file: string; name: string; adopted: boolean }
  /** `fileMissing`: credentials exist but `file` does not (the admin token is elsewhere, or lost). */
  | { created: false; fileMissing: boolean };

export interface Operators extends OperatorService {
  ensureAdmin(file: string): Promise<EnsureAdminResult>;
}

export function createOperators(opts: { store: Store; audit: AuditService }): Operators {
  const { store } = opts;

  async function insert(name: string, token: string, actor: string, details: Record<string, unknown>): Promise<string> {
    const id = randomUUID();
    await store.transaction(async (tx) => {
      await tx.insertOperatorCredential({ id, name, tokenHash: hashSecret(token) });
      await tx.appendAudit({ actor, action: 'operator.created', subject: name, details: { id, ...details } });
    });
    return id;
  }

  return {
    async ensureAdmin(file) {
      const all = await store.listOperatorCredentials();
      if (all.some((c) => c.revokedAt === null)) {
        return { created: false, fileMissing: (await readOptional(file)) === null };
      }
      let token = newSecret(OPERATOR_TOKEN_PREFIX);
      let adopted = false;
      if (!(await writeNew(file, `${token}\n`, 0o600))) {
        const existing = ((await readOptional(file)) ?? '').trim();
        if (!looksLikeSecret(existing, OPERATOR_TOKEN_PREFIX)) {
          throw new FleetgateError(
            'DATA_DIR_INVALID',
            `${file} exists but does not hold an operator token; move it away so a new admin credential can be written`,
          );
        }
        if (all.some((c) => c.tokenHash === hashSecret(existing))) {
          throw new FleetgateError(
            'DATA_DIR_INVALID',
            `${file} holds a revoked operator token and no operator credential is active; move it away so a new admin credential can be written`,
          );
        }
        if (await isTooOpen(file)) {
          throw new FleetgateError(
            'DATA_DIR_INVALID',
            `${file} holds an operator token but is readable by group or others; chmod 600 it or move it away`,
          );
        }
        token = existing;
        adopted = true;
      }
      try {
        await insert(ADMIN_OPERATOR_NAME, token, SYSTEM_ACTOR, { adopted });
      } catch (e) {
        // Another process sharing the data dir registered the same token first.
        if (isFleetgateError(e) && e.code === 'CONFLICT') return { created: false, fileMissing: false };
        throw e;
      }
      return { created: true, file, name: ADMIN_OPERATOR_NAME, adopted };
    },

    async authenticate(token) {
      if (!looksLikeSecret(token, OPERATOR_TOKEN_PREFIX)) return null;
      const rec = await store.findOperatorCredential(hashSecret(token));
      if (!rec || rec.revokedAt !== null) return null;
      return { kind: 'operator', id: rec.name };
    },

    async create(name, actor: Actor) {
      if (!isValidDeviceId(name)) {
        throw new FleetgateError(
          'BAD_REQUEST',
          `invalid operator name ${JSON.stringify(printable(name))} (1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)`,
        );
      }
      const active = await store.listOperatorCredentials();
      if (active.some((c) => c.name === name && c.revokedAt === null)) {
        throw new FleetgateError('CONFLICT', `an active operator named ${name} already exists`);
      }
      const token = newSecret(OPERATOR_TOKEN_PREFIX);
      const id = await insert(name, token, actorString(actor), {});
      return { id, name, token };
    },

    async list() {
      return (await store.listOperatorCredentials()).map(({ tokenHash: _hidden, ...rest }) => rest);
    },

    async page(o = {}) {
      const limit = o.limit ?? 100;
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
        throw new FleetgateError('BAD_REQUEST', 'limit must be an integer from 1 to 1000');
      }
      const page = await store.pageOperatorCredentials({ limit, cursor: o.cursor });
      return { ...page, items: page.items.map(({ tokenHash: _hidden, ...rest }) => rest) };
    },

    async revoke(id, actor: Actor) {
      await store.transaction(async (tx) => {
        const all = await tx.listOperatorCredentials();
        const rec = all.find((c) => c.id === id);
        if (!rec)
          throw new FleetgateError('NOT_FOUND', `operator credential ${JSON.stringify(printable(id, 64))} not found`);
        if (rec.revokedAt === null && !all.some((c) => c.revokedAt === null && c.id !== id)) {
          throw new FleetgateError(
            'CONFLICT',
            `${rec.name} is the last active operator credential: create another (fleetgate operator create NAME) before revoking it`,
          );
        }
        // Revoking twice is a no-op (the first revocation time stays; nothing new to audit).
        if (!(await tx.revokeOperatorCredential(id, new Date()))) return;
        await tx.appendAudit({
          actor: actorString(actor),
          action: 'operator.revoked',
          subject: rec.name,
          details: { id },
        });
      });
    },
  };
}
