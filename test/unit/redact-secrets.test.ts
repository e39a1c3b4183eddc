/**
 * The one redaction of fleetgate secrets (issue 21 item 3) and the rate-limited log of
 * unauthenticated EST failures (item 2), with an injected clock.
 */
import { describe, expect, it } from 'vitest';
import {
  UnauthenticatedFailureLog,
  unauthenticated,
  unauthenticatedReason,
} from '../../server/src/enrollment/auth-failures.js';
import { printable } from '../../server/src/enrollment/context.js';
import { ENROLLMENT_TOKEN_PREFIX, newSecret, OPERATOR_TOKEN_PREFIX } from '../../server/src/enrollment/secrets.js';
import { FleetgateError } from '../../server/src/errors.js';
import { containsSecret, redactSecrets, redactSecretsDeep } from '../../server/src/redact.js';

describe('redactSecrets', () => {
  const token = newSecret(ENROLLMENT_TOKEN_PREFIX);
  const operator = newSecret(OPERATOR_TOKEN_PREFIX);

  it('masks enrollment and operator tokens wherever they sit in a text', () => {
    expect(redactSecrets(token)).toBe('fgt_[redacted]');
    expect(redactSecrets(`device:${token}`)).toBe('device:fgt_[redacted]');
    expect(redactSecrets(`not bound to device ${operator}, and ${token}.`)).toBe(
      'not bound to device fgo_[redacted], and fgt_[redacted].',
    );
    // truncated or typo'd secrets are still masked
    expect(redactSecrets(token.slice(0, 20))).toBe('fgt_[redacted]');
    expect(containsSecret(`x${operator}x`)).toBe(true);
  });

  it('leaves ordinary values alone', () => {
    for (const s of ['sensor-42', 'fgt_', 'fgt_short', 'device:?', 'a1b2c3d4e5f60718293a4b5c6d7e8f90']) {
      expect(redactSecrets(s)).toBe(s);
      expect(containsSecret(s)).toBe(false);
    }
  });

  it('walks audit details, keys included, and printable() masks too', () => {
    expect(redactSecretsDeep({ a: [token, { [operator]: 1 }], n: 5, ok: true, none: null })).toEqual({
      a: ['fgt_[redacted]', { 'fgo_[redacted]': 1 }],
      n: 5,
      ok: true,
      none: null,
    });
    expect(printable(`${token} and more`, 20)).toBe('fgt_[redacted] and m...');
  });
});

describe('unauthenticated EST failures', () => {
  it('knows the transport codes and the tagged use-case rejections, and nothing else', () => {
    expect(unauthenticatedReason(new FleetgateError('AUTH_REQUIRED', 'x'))).toBe('auth_missing');
    expect(unauthenticatedReason(new FleetgateError('AUTH_INVALID', 'x'))).toBe('auth_malformed');
    expect(unauthenticatedReason(new FleetgateError('CERT_REQUIRED', 'x'))).toBe('cert_missing');
    expect(unauthenticatedReason(unauthenticated('TOKEN_INVALID', 'x', 'token_unknown'))).toBe('token_unknown');
    expect(unauthenticatedReason(new FleetgateError('TOKEN_USED', 'x'))).toBeNull();
    expect(unauthenticatedReason(new FleetgateError('TOKEN_INVALID', 'x', { unauthenticated: 'made-up' }))).toBeNull();
    expect(unauthenticatedReason(new Error('x'))).toBeNull();
  });

  it('counts every failure but logs at most one line per reason per interval, with the count suppressed since', () => {
    let t = 1_000_000;
    const lines: { fields: Record<string, unknown>; message: string }[] = [];
    const counted: string[] = [];
    const log = new UnauthenticatedFailureLog({
      intervalMs: 60_000,
      now: () => t,
      log: (fields, message) => lines.push({ fields, message }),
      count: (kind, reason) => counted.push(`${kind}:${reason}`),
    });
    for (let i = 0; i < 100; i++) log.record('enroll', 'token_unknown');
    log.record('enroll', 'token_malformed');
    log.record('reenroll', 'cert_unknown');
    expect(counted).toHaveLength(102);
    expect(lines.map((l) => l.fields)).toEqual([
      { kind: 'enroll', reason: 'token_unknown', suppressed: 0 },
      { kind: 'enroll', reason: 'token_malformed', suppressed: 0 },
      { kind: 'reenroll', reason: 'cert_unknown', suppressed: 0 },
    ]);
    t += 59_999;
    log.record('enroll', 'token_unknown');
    expect(lines).toHaveLength(3);
    t += 1;
    log.record('enroll', 'token_unknown');
    expect(lines).toHaveLength(4);
    expect(lines[3]!.fields).toEqual({ kind: 'enroll', reason: 'token_unknown', suppressed: 100 });
    expect(lines[3]!.message).toContain('100 more since the last line');
  });
});
