/** The hash-chained audit log and the actor every audited event names. */

export { AUDIT_PAGE_SIZE, createAudit } from './audit.js';
export * from './types.js';
