/** Operator credentials (bearer tokens for the operator API and the CLI). */
import type { Actor } from '../audit/types.js';
import type { OperatorCredentialRecord, Page } from '../store/types.js';

export interface OperatorService {
  /** Creates the first admin credential and writes it (0600) to `file` if none exists yet. */
  ensureAdmin(file: string): Promise<{ created: boolean }>;
  /** Resolves a bearer token to an operator, or null. Constant-time comparison via hashes. */
  authenticate(token: string): Promise<Actor | null>;
  create(name: string, actor: Actor): Promise<{ id: string; name: string; token: string }>;
  list(): Promise<Omit<OperatorCredentialRecord, 'tokenHash'>[]>;
  /** Oldest first, one keyset page at a time with the total. */
  page(opts?: {
    limit?: number;
    cursor?: string | undefined;
  }): Promise<Page<Omit<OperatorCredentialRecord, 'tokenHash'>>>;
  revoke(id: string, actor: Actor): Promise<void>;
}
