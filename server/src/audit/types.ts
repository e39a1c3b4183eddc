/**
 * Who did something and the hash-chained audit log that records it, as the use cases and the
 * transports see them.
 */
import type { AuditEvent, Page } from '../store/types.js';

/** Who did something; audited as `${kind}:${id}`. */
export interface Actor {
  kind: 'operator' | 'device' | 'service' | 'system';
  id: string;
}

export const actorString = (a: Actor): string => `${a.kind}:${a.id}`;

export interface AuditService {
  record(actor: Actor, action: string, subject: string | null, details?: Record<string, unknown>): Promise<void>;
  list(opts?: { afterSeq?: number; limit?: number }): Promise<AuditEvent[]>;
  /** In chain order after the cursor (or afterSeq), one page; total is the chain's length. */
  page(opts?: { afterSeq?: number; limit?: number; cursor?: string | undefined }): Promise<Page<AuditEvent>>;
  verify(): Promise<{ ok: true; count: number } | { ok: false; count: number; brokenAtSeq: number; reason: string }>;
}
