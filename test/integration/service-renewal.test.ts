/**
 * Issue 21 item 7: a service certificate does not renew itself forever through simplereenroll.
 * FLEETGATE_SERVICE_SELF_RENEW switches service self-renewal off; FLEETGATE_SERVICE_MAX_LIFETIME
 * ends it that long after the operator issued the credential (carried along renewals as the
 * store's originIssuedAt). Either way: REISSUE_REQUIRED, audited, and `service create` starts
 * over. Devices are not limited. Both store backends, the use case's clock moved (no sleeps).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCsr } from '../helpers/ca.js';
import { backends, type Harness, OPERATOR, openHarness, rejectsWith } from '../helpers/provisioning.js';

const list = await backends();
const DAY = 86_400_000;

describe.each(list)('service self-renewal ($name)', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await openHarness(backend);
  });
  afterAll(async () => {
    await h?.close();
  });

  const service = async (name: string) =>
    h.provisioning.issueService({ name, csr: (await makeCsr(name)).der, actor: OPERATOR });
  const device = async (id: string) => {
    const [t] = await h.provisioning.createTokens({ deviceIds: [id] }, { actor: OPERATOR });
    return h.provisioning.enroll({ deviceId: id, token: t!.token, csr: (await makeCsr(id)).der });
  };
  const refusals = async (name: string) =>
    (await h.store.listAudit({ limit: 100_000 })).filter(
      (e) => e.action === 'reenroll.failed' && e.subject === name && e.details.code === 'REISSUE_REQUIRED',
    );

  it('renews by default, every renewal keeping the origin of the operator-issued credential', async () => {
    const first = await service('svc-default');
    const origin = (await h.store.getCertificate(first.certificate.serial))!.originIssuedAt;
    expect(origin).toBeInstanceOf(Date);
    const second = await h.provisioning.reenroll({
      clientCertDer: first.certificate.der,
      csr: (await makeCsr('svc-default')).der,
    });
    const third = await h.provisioning.reenroll({
      clientCertDer: second.certificate.der,
      csr: (await makeCsr('svc-default')).der,
    });
    for (const r of [second, third]) {
      expect((await h.store.getCertificate(r.certificate.serial))!.originIssuedAt).toEqual(origin);
    }
  });

  it('refuses every service renewal when self-renewal is off (REISSUE_REQUIRED, audited); devices still renew', async () => {
    const strict = h.provisioningWith({ serviceSelfRenew: false });
    const svc = await service('svc-off');
    const err = await rejectsWith(
      strict.reenroll({ clientCertDer: svc.certificate.der, csr: (await makeCsr('svc-off')).der }),
      'REISSUE_REQUIRED',
    );
    expect(err.message).toContain('service create');
    expect(await h.store.listCertificates('svc-off')).toHaveLength(1);
    const audited = await refusals('svc-off');
    expect(audited).toHaveLength(1);
    expect(audited[0]!.actor).toBe('service:svc-off');

    const dev = await device('dev-self-renew');
    const renewed = await strict.reenroll({
      clientCertDer: dev.certificate.der,
      csr: (await makeCsr('dev-self-renew')).der,
    });
    expect(renewed.certificate.commonName).toBe('dev-self-renew');
  });

  it('ends renewals the maximum lifetime after the operator issued the credential; service create starts over', async () => {
    const limited = h.provisioningWith({ serviceMaxLifetimeMs: 10 * DAY });
    const svc = await service('svc-limit');
    const dev = await device('dev-limit');
    try {
      h.clock.advance(9 * DAY);
      const renewed = await limited.reenroll({
        clientCertDer: svc.certificate.der,
        csr: (await makeCsr('svc-limit')).der,
      });
      // one second past the limit: the renewed certificate (still valid for weeks) cannot renew,
      // because it descends from the credential issued ten days ago
      h.clock.advance(DAY + 1000);
      await rejectsWith(
        limited.reenroll({ clientCertDer: renewed.certificate.der, csr: (await makeCsr('svc-limit')).der }),
        'REISSUE_REQUIRED',
      );
      expect(await refusals('svc-limit')).toHaveLength(1);
      // a device enrolled at the same moment keeps renewing
      await limited.reenroll({ clientCertDer: dev.certificate.der, csr: (await makeCsr('dev-limit')).der });

      // the operator issues a new credential: a new origin, renewals work again
      const again = await h.provisioning.issueService({
        name: 'svc-limit',
        csr: (await makeCsr('svc-limit')).der,
        actor: OPERATOR,
      });
      expect((await h.store.getCertificate(again.certificate.serial))!.originIssuedAt.getTime()).toBeGreaterThan(
        (await h.store.getCertificate(svc.certificate.serial))!.originIssuedAt.getTime() + 9 * DAY,
      );
      await limited.reenroll({ clientCertDer: again.certificate.der, csr: (await makeCsr('svc-limit')).der });
    } finally {
      h.clock.reset();
    }
  });
});
