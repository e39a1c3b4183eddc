/**
 * @fleetgate/firmware-sim: runs fleets of simulated devices on @fleetgate/device-client's public
 * API (`npx fleetgate-sim --devices N --scenario S [--json]`, see `--help`).
 */
export { HELP, parseArgs, parseDuration, SCENARIOS, type Scenario, type SimOptions, UsageError } from './args.js';
export { SimError, type SimErrorCode } from './errors.js';
export { Fleet, type FleetOptions, type SimDevice } from './fleet.js';
export { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main, SIM_VERSION } from './main.js';
export { OperatorApi, resolveTarget, type Target } from './target.js';

export const FIRMWARE_SIM_VERSION = '0.1.0';
