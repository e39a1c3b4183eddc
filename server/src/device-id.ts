/** Device identity rules from the public contract (DESIGN.md, "device identity"). */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function isValidDeviceId(id: unknown): id is string {
  return typeof id === 'string' && DEVICE_ID_PATTERN.test(id);
}

export const deviceUri = (id: string): string => `urn:fleetgate:device:${id}`;
export const serviceUri = (name: string): string => `urn:fleetgate:service:${name}`;
