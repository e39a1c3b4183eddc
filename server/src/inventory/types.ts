/** The device inventory (devices, their certificates, what expires soon), read only. */
import type { CertificateRecord, DeviceRecord, DeviceSort, DeviceStatus, Page } from '../store/types.js';

export interface DeviceView extends DeviceRecord {
  certificates: CertificateRecord[];
  /** The newest valid, unexpired certificate, if any. */
  current: CertificateRecord | null;
}

export interface InventoryService {
  listDevices(opts?: { limit?: number; offset?: number; status?: 'active' | 'revoked' }): Promise<DeviceView[]>;
  /**
   * Devices in the order `sort` (default id), one keyset page (store/paging.ts) with the total;
   * limit 1-1000 (100). An unknown sort or key type is BAD_REQUEST.
   */
  pageDevices(opts?: {
    limit?: number;
    cursor?: string | undefined;
    offset?: number;
    status?: DeviceStatus;
    kind?: 'device' | 'service';
    online?: boolean;
    /** Ids starting with this (the console's search). */
    prefix?: string;
    /** The current certificate's key type (KEY_TYPE_PATTERN: ec-p256, rsa-2048, ...). */
    keyType?: string;
    sort?: DeviceSort;
  }): Promise<Page<DeviceView>>;
  getDevice(id: string): Promise<DeviceView>;
  expiring(withinDays: number): Promise<CertificateRecord[]>;
  pageExpiring(
    withinDays: number,
    opts?: { limit?: number; cursor?: string | undefined },
  ): Promise<Page<CertificateRecord>>;
}
