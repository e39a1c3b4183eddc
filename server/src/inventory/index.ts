/** The device inventory: devices with their certificates, and what expires soon. */

export { createInventory, currentCertificate } from './inventory.js';
export * from './types.js';
