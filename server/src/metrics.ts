/**
 * Prometheus metrics (prom-client), one registry per server. Parts receive narrow observer
 * interfaces; only this module knows prom-client.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import type { ProvisioningObserver } from './enroll/types.js';
import type { ErrorCode } from './errors.js';

export interface ServerMetrics {
  registry: Registry;
  provisioning: ProvisioningObserver;
}

export function createMetrics(opts: { certsExpiringSoon: () => Promise<number> }): ServerMetrics {
  const registry = new Registry();
  const enrollments = new Counter({
    name: 'fleetgate_enrollments_total',
    help: 'EST enrollments and re-enrollments by result (ok or error code)',
    labelNames: ['kind', 'result'] as const,
    registers: [registry],
  });
  const revocations = new Counter({
    name: 'fleetgate_revocations_total',
    help: 'Certificates revoked',
    registers: [registry],
  });
  let crlThisUpdate: Date | null = null;
  new Gauge({
    name: 'fleetgate_crl_age_seconds',
    help: 'Seconds since the current CRL was generated (thisUpdate)',
    registers: [registry],
    collect() {
      this.set(crlThisUpdate ? (Date.now() - crlThisUpdate.getTime()) / 1000 : -1);
    },
  });
  new Gauge({
    name: 'fleetgate_certs_expiring_soon',
    help: 'Valid certificates expiring within 7 days',
    registers: [registry],
    async collect() {
      this.set(await opts.certsExpiringSoon());
    },
  });
  return {
    registry,
    provisioning: {
      enrollment(kind: 'enroll' | 'reenroll', result: 'ok' | ErrorCode) {
        enrollments.inc({ kind, result });
      },
      revoked(count: number) {
        revocations.inc(count);
      },
      crlPublished(thisUpdate: Date) {
        crlThisUpdate = thisUpdate;
      },
    },
  };
}
