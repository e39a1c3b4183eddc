/** Operator credentials: the first admin, bearer-token authentication, create, list, revoke. */

export { ADMIN_OPERATOR_NAME, createOperators, type EnsureAdminResult, type Operators } from './operators.js';
export * from './types.js';
