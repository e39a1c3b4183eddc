/**
 * A socket that cannot listen is a configuration problem the operator can fix (another process
 * holds the port, a privileged port, an address this machine does not have): one line naming the
 * variable, not a stack trace.
 */
import { FleetgateError } from './errors.js';

export function listenError(e: unknown, where: { host: string; port: number; variable: string }): unknown {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const at = `${where.host}:${where.port}`;
  switch (code) {
    case 'EADDRINUSE':
      return new FleetgateError('CONFIG_INVALID', `${at} is already in use by another process (${where.variable})`);
    case 'EACCES':
      return new FleetgateError('CONFIG_INVALID', `no permission to listen on ${at} (${where.variable})`);
    case 'EADDRNOTAVAIL':
      return new FleetgateError('CONFIG_INVALID', `${where.host} is not an address of this machine (FLEETGATE_HOST)`);
    default:
      return e;
  }
}
