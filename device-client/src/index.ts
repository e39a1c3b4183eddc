/**
 * @fleetgate/device-client: the library a device embeds (keys, CSR, EST enrollment, credential
 * store, MQTT over mTLS, renewal). The workspace exists so the build and CI cover it from the
 * start; its API arrives with the device-client issue.
 */
export const DEVICE_CLIENT_VERSION = '0.1.0';
