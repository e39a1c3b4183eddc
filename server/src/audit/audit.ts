/**
 * The audit log as a service: append, page through, and verify the hash chain
 * (store/audit-hash.ts). Verification walks the whole log in pages, each page checked against the
 * last verified event, and reports the first broken link.
 */

import { FleetgateError } from '../errors.js';
import { verifyAuditChain } from '../store/audit-hash.js';
import type { Store } from '../store/types.js';
import { type AuditService, actorString } from './types.js';

export const AUDIT_PAGE_SIZE = 1000;
const DEFAULT_LIST_LIMIT = 100;

export function createAudit(opts: { store: Store; pageSize?: number }): AuditService {
  const { store } = opts;
  const pageSize = opts.pageSize ?? AUDIT_PAGE_SIZE;
  return {
    async record(actor, action, subject, details = {}) {
      if (typeof action !== 'string' || action === '')
        throw new FleetgateError('BAD_REQUEST', 'audit action is required');
      await store.appendAudit({ actor: actorString(actor), action, subject, details });
    },

    async list(o = {}) {
      const limit = o.limit ?? DEFAULT_LIST_LIMIT;
      const afterSeq = o.afterSeq ?? 0;
      if (!Number.isInteger(limit) || limit < 1 || limit > AUDIT_PAGE_SIZE) {
        throw new FleetgateError('BAD_REQUEST', `limit must be an integer from 1 to ${AUDIT_PAGE_SIZE}`);
      }
      if (!Number.isInteger(afterSeq) || afterSeq < 0) {
        throw new FleetgateError('BAD_REQUEST', 'afterSeq must be a non-negative integer');
      }
      return store.listAudit({ afterSeq, limit });
    },

    async page(o = {}) {
      const limit = o.limit ?? DEFAULT_LIST_LIMIT;
      if (!Number.isInteger(limit) || limit < 1 || limit > AUDIT_PAGE_SIZE) {
        throw new FleetgateError('BAD_REQUEST', `limit must be an integer from 1 to ${AUDIT_PAGE_SIZE}`);
      }
      if (o.afterSeq !== undefined && (!Number.isInteger(o.afterSeq) || o.afterSeq < 0)) {
        throw new FleetgateError('BAD_REQUEST', 'afterSeq must be a non-negative integer');
      }
      if (o.afterSeq !== undefined && o.cursor !== undefined) {
        throw new FleetgateError('BAD_REQUEST', 'give a cursor or afterSeq, not both');
      }
      return store.pageAudit({
        limit,
        cursor: o.cursor,
        ...(o.afterSeq !== undefined ? { afterSeq: o.afterSeq } : {}),
      });
    },

    async verify() {
      let anchor: { seq: number; hash: string } | undefined;
      let count = 0;
      for (;;) {
        const page = await store.listAudit({ afterSeq: anchor?.seq ?? 0, limit: pageSize });
        if (page.length === 0) return { ok: true, count };
        const result = verifyAuditChain(page, anchor);
        if (!result.ok) {
          // Events before the broken one verified.
          const before = page.findIndex((e) => e.seq === result.brokenAtSeq);
          return {
            ok: false,
            count: count + Math.max(0, before),
            brokenAtSeq: result.brokenAtSeq,
            reason: result.reason,
          };
        }
        count += page.length;
        const last = page[page.length - 1]!;
        anchor = { seq: last.seq, hash: last.hash };
      }
    },
  };
}
