/**
 * Simulator-level failures (finding the server, the operator API, the state directory). Each has a
 * stable code, printed in brackets and as `error.code` in --json; device-level failures are counted
 * in the report instead (by DeviceClientError code).
 */
export type SimErrorCode =
  | 'CONFIG_INVALID'
  | 'DATA_DIR_INVALID'
  | 'AUTH_REQUIRED'
  | 'AUTH_INVALID'
  | 'CA_MISSING'
  | 'SERVER_UNREACHABLE'
  | 'API_ERROR'
  | 'SIM_DIR_INVALID'
  | 'DEVICES_FAILED'
  | 'INTERRUPTED'
  | 'INTERNAL';

export class SimError extends Error {
  override readonly name = 'SimError';
  constructor(
    readonly code: SimErrorCode,
    message: string,
    /** The server's own code, when the operator API refused. */
    readonly serverCode?: string,
  ) {
    super(message);
  }
}
