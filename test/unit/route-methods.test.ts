import { describe, expect, it } from 'vitest';
import { routePattern } from '../../server/src/http/route-methods.js';

describe('routePattern', () => {
  it('matches parameters within one segment, wildcards across segments, literals literally', () => {
    const dev = routePattern('/api/v1/devices/:id');
    expect(dev.test('/api/v1/devices/dev-1')).toBe(true);
    expect(dev.test('/api/v1/devices/dev-1/')).toBe(true);
    expect(dev.test('/api/v1/devices/dev-1/revoke')).toBe(false);
    expect(dev.test('/api/v1/devices/')).toBe(false);
    const ocsp = routePattern('/ocsp/*');
    expect(ocsp.test('/ocsp/MAMCAQA%3D/more')).toBe(true);
    const est = routePattern('/.well-known/est/cacerts');
    expect(est.test('/.well-known/est/cacerts')).toBe(true);
    expect(est.test('/Xwell-known/est/cacerts')).toBe(false); // '.' is not a wildcard
  });
});
