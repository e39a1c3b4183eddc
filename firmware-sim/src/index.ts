/**
 * @fleetgate/firmware-sim: runs fleets of simulated devices on @fleetgate/device-client's public
 * API. The workspace exists so the build and CI cover it from the start; the simulator arrives
 * with the device-client issue.
 */
export const FIRMWARE_SIM_VERSION = '0.1.0';
