/** Read-only views of devices (and services) with their certificates, for operators. */

import { type Clock, printable, systemClock } from '../enrollment/context.js';
import { FleetgateError } from '../errors.js';
import {
  type CertificateRecord,
  DEVICE_SORTS,
  type DeviceRecord,
  type DeviceStatus,
  KEY_TYPE_PATTERN,
  type Page,
  type Store,
} from '../store/types.js';
import type { DeviceView, InventoryService } from './types.js';

const DEFAULT_LIMIT = 100;
const DEVICE_STATUSES: readonly DeviceStatus[] = ['active', 'revoked', 'reprovisioning', 'decommissioned'];
const MAX_LIMIT = 1000;
const MAX_EXPIRING_DAYS = 3650;
const DAY_MS = 86_400_000;

/** The newest valid certificate that is already and still valid at `now`. */
export function currentCertificate(certs: CertificateRecord[], now: Date): CertificateRecord | null {
  let best: CertificateRecord | null = null;
  for (const c of certs) {
    if (c.status !== 'valid' || c.notAfter.getTime() <= now.getTime()) continue;
    if (c.notBefore.getTime() > now.getTime()) continue;
    if (
      !best ||
      c.notBefore.getTime() > best.notBefore.getTime() ||
      (c.notBefore.getTime() === best.notBefore.getTime() && c.issuedAt > best.issuedAt)
    ) {
      best = c;
    }
  }
  return best;
}

function checkLimit(limit: number | undefined): number {
  const n = limit ?? DEFAULT_LIMIT;
  if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT) {
    throw new FleetgateError('BAD_REQUEST', `limit must be an integer from 1 to ${MAX_LIMIT}`);
  }
  return n;
}

function checkDays(withinDays: unknown): void {
  if (
    typeof withinDays !== 'number' ||
    !Number.isInteger(withinDays) ||
    withinDays < 1 ||
    withinDays > MAX_EXPIRING_DAYS
  ) {
    throw new FleetgateError('BAD_REQUEST', `days must be an integer from 1 to ${MAX_EXPIRING_DAYS}`);
  }
}

export function createInventory(opts: { store: Store; now?: Clock | undefined }): InventoryService {
  const { store } = opts;
  const now = opts.now ?? systemClock;

  async function view(d: DeviceRecord, at: Date): Promise<DeviceView> {
    const certificates = await store.listCertificates(d.id);
    return { ...d, certificates, current: currentCertificate(certificates, at) };
  }

  async function pageDevices(o: Parameters<InventoryService['pageDevices']>[0] = {}): Promise<Page<DeviceView>> {
    const limit = checkLimit(o.limit);
    const offset = o.offset ?? 0;
    if (!Number.isInteger(offset) || offset < 0)
      throw new FleetgateError('BAD_REQUEST', 'offset must be a non-negative integer');
    if (o.status !== undefined && !DEVICE_STATUSES.includes(o.status)) {
      throw new FleetgateError('BAD_REQUEST', `status must be one of ${DEVICE_STATUSES.join(', ')}`);
    }
    if (o.sort !== undefined && !DEVICE_SORTS.includes(o.sort)) {
      throw new FleetgateError('BAD_REQUEST', `sort must be one of ${DEVICE_SORTS.join(', ')}`);
    }
    if (o.keyType !== undefined && (typeof o.keyType !== 'string' || !KEY_TYPE_PATTERN.test(o.keyType))) {
      throw new FleetgateError('BAD_REQUEST', 'keyType must be ec-p256, ec-p384, ed25519, rsa-<bits>, rsa or other');
    }
    const at = now();
    const page = await store.pageDevices({
      limit,
      offset,
      cursor: o.cursor,
      status: o.status,
      now: at,
      ...(o.sort !== undefined ? { sort: o.sort } : {}),
      ...(o.keyType !== undefined ? { keyType: o.keyType } : {}),
      ...(o.kind !== undefined ? { kind: o.kind } : {}),
      ...(o.online !== undefined ? { online: o.online } : {}),
      ...(o.prefix !== undefined ? { prefix: o.prefix } : {}),
    });
    return { ...page, items: await Promise.all(page.items.map((d) => view(d, at))) };
  }

  return {
    async listDevices(o = {}) {
      return (await pageDevices(o)).items;
    },

    pageDevices,

    async getDevice(id) {
      const d = typeof id === 'string' ? await store.getDevice(id) : null;
      if (!d) throw new FleetgateError('DEVICE_NOT_FOUND', `device ${JSON.stringify(printable(id, 64))} not found`);
      return view(d, now());
    },

    async expiring(withinDays) {
      checkDays(withinDays);
      return store.listExpiring(new Date(now().getTime() + withinDays * DAY_MS));
    },

    async pageExpiring(withinDays, o = {}) {
      checkDays(withinDays);
      const before = new Date(now().getTime() + withinDays * DAY_MS);
      return store.pageExpiring({ before, limit: checkLimit(o.limit), cursor: o.cursor });
    },
  };
}
