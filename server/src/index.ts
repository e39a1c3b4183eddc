export { type Config, ConfigError, loadConfig } from './config.js';
export { ERROR_CODES, type ErrorCode, FleetgateError } from './errors.js';
export { type RunningServer, startServer } from './main.js';
