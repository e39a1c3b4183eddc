/** Console sessions (idle and absolute expiry, CSRF comparison, cookie parsing) and the fleet series. */
import { describe, expect, it } from 'vitest';
import { FleetSeries } from '../../server/src/console/fleet-series.js';
import { ConsoleSessions, cookieValue, SESSION_COOKIE } from '../../server/src/console/sessions.js';

const actor = { kind: 'operator' as const, id: 'op-1' };

describe('ConsoleSessions', () => {
  it('ends a session left idle, and one past its absolute lifetime however busy', () => {
    let now = 1_000_000;
    const s = new ConsoleSessions({ idleMs: 1000, absoluteMs: 5000, max: 10 }, () => now);
    const { cookie } = s.create('tok', actor);
    now += 999;
    expect(s.lookup(cookie).ok).toBe(true);
    now += 999; // touched at +999: still within idle
    expect(s.lookup(cookie).ok).toBe(true);
    now += 1000;
    expect(s.lookup(cookie)).toEqual({ ok: false, why: 'expired' });
    expect(s.lookup(cookie)).toEqual({ ok: false, why: 'unknown' });

    const busy = s.create('tok', actor).cookie;
    for (let i = 0; i < 9; i++) {
      now += 500;
      expect(s.lookup(busy).ok, `at ${i}`).toBe(true);
    }
    now += 500;
    expect(s.lookup(busy)).toEqual({ ok: false, why: 'expired' });
  });

  it('keeps at most `max` sessions, dropping the oldest', () => {
    const s = new ConsoleSessions({ idleMs: 1e9, absoluteMs: 1e9, max: 2 });
    const a = s.create('t', actor).cookie;
    const b = s.create('t', actor).cookie;
    const c = s.create('t', actor).cookie;
    expect(s.lookup(a).ok).toBe(false);
    expect(s.lookup(b).ok).toBe(true);
    expect(s.lookup(c).ok).toBe(true);
    s.endFor('op-1');
    expect(s.lookup(c).ok).toBe(false);
  });

  it('compares CSRF tokens exactly', () => {
    const s = new ConsoleSessions();
    const { session } = s.create('t', actor);
    expect(ConsoleSessions.csrfMatches(session, session.csrf)).toBe(true);
    for (const bad of [undefined, '', session.csrf.slice(1), `${session.csrf} `, session.csrf.toUpperCase()]) {
      if (bad === session.csrf) continue;
      expect(ConsoleSessions.csrfMatches(session, bad)).toBe(false);
    }
  });

  it('reads the session cookie and nothing malformed', () => {
    expect(cookieValue(`a=1; ${SESSION_COOKIE}=abc_-9; b=2`, SESSION_COOKIE)).toBe('abc_-9');
    for (const h of [undefined, '', 'a=1', `${SESSION_COOKIE}=`, `${SESSION_COOKIE}=a b`, `${SESSION_COOKIE}="x"`]) {
      expect(cookieValue(h, SESSION_COOKIE), String(h)).toBeUndefined();
    }
    expect(cookieValue(`${SESSION_COOKIE}=${'a'.repeat(129)}`, SESSION_COOKIE)).toBeUndefined();
  });
});

describe('FleetSeries', () => {
  it('counts into minute buckets for the hour and 15-minute buckets for the day, forgetting after a day', () => {
    let now = Date.UTC(2026, 11, 5, 12, 0, 30);
    const f = new FleetSeries(() => now);
    f.add('connectsFull');
    f.add('connectsResumed', 2);
    f.refused('revoked');
    now += 60_000;
    f.add('connectsFull');
    const hour = f.window('hour');
    expect(hour.at.length).toBe(60);
    expect(hour.series.connectsFull.slice(-2)).toEqual([1, 1]);
    expect(hour.series.connectsResumed.slice(-2)).toEqual([2, 0]);
    expect(hour.refusals.revoked?.slice(-2)).toEqual([1, 0]);
    const day = f.window('day');
    expect(day.bucketMs).toBe(15 * 60_000);
    expect(day.series.connectsFull.reduce((a, b) => a + b, 0)).toBe(2);
    now += 86_400_000;
    expect(f.window('day').series.connectsFull.reduce((a, b) => a + b, 0)).toBe(0);
    expect(f.window('hour').refusals).toEqual({});
  });
});
