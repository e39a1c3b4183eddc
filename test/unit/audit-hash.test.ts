import { describe, expect, it } from 'vitest';
import {
  auditHash,
  canonicalJson,
  GENESIS_HASH,
  normaliseDetails,
  verifyAuditChain,
} from '../../server/src/store/audit-hash.js';
import type { AuditEvent } from '../../server/src/store/types.js';

/** Builds a valid chain the way the store does. */
function chain(n: number): AuditEvent[] {
  const events: AuditEvent[] = [];
  let prevHash = GENESIS_HASH;
  for (let seq = 1; seq <= n; seq++) {
    const fields = {
      seq,
      at: new Date(Date.UTC(2025, 0, 1, 0, 0, seq)),
      actor: seq % 2 ? 'operator:alice' : 'system',
      action: 'device.revoke',
      subject: seq === 3 ? null : `dev-${seq}`,
      details: { reason: seq, nested: { z: [1, 'two', null], a: true } },
    };
    const hash = auditHash(prevHash, fields);
    events.push({ ...fields, prevHash, hash });
    prevHash = hash;
  }
  return events;
}

const clone = (events: AuditEvent[]): AuditEvent[] =>
  events.map((e) => ({ ...e, at: new Date(e.at), details: structuredClone(e.details) }));

describe('canonicalJson', () => {
  it('sorts keys recursively and ignores insertion order', () => {
    expect(canonicalJson({ b: 1, a: { d: [{ y: 1, x: 2 }], c: 'é' } })).toBe(
      '{"a":{"c":"é","d":[{"x":2,"y":1}]},"b":1}',
    );
    expect(canonicalJson({ a: 1, b: 2 })).toBe(canonicalJson({ b: 2, a: 1 }));
  });

  it('follows JSON.stringify for everything but key order', () => {
    const value = { u: undefined, n: Number.NaN, d: new Date(0), arr: [undefined, () => 1], neg: -0, s: 'q"\\\n' };
    expect(JSON.parse(canonicalJson(value))).toEqual(JSON.parse(JSON.stringify(value)));
    expect(() => canonicalJson({ big: 1n })).toThrow(TypeError);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(TypeError);
  });

  it('normaliseDetails yields the JSON data model', () => {
    expect(normaliseDetails({ b: undefined, a: new Date(0) })).toEqual({ a: '1970-01-01T00:00:00.000Z' });
  });
});

describe('auditHash', () => {
  it('is a lower-case SHA-256 hex digest that depends on every field', () => {
    const base = { seq: 1, at: new Date(0), actor: 'a', action: 'x', subject: 's', details: { k: 1 } };
    const h = auditHash(GENESIS_HASH, base);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(auditHash(GENESIS_HASH, { ...base, at: '1970-01-01T00:00:00.000Z' })).toBe(h);
    const variants = [
      { ...base, seq: 2 },
      { ...base, at: new Date(1) },
      { ...base, actor: 'b' },
      { ...base, action: 'y' },
      { ...base, subject: null },
      { ...base, subject: 'null' },
      { ...base, details: { k: '1' } },
    ];
    for (const v of variants) expect(auditHash(GENESIS_HASH, v)).not.toBe(h);
    expect(auditHash('f'.repeat(64), base)).not.toBe(h);
  });

  it('does not depend on the key order of details', () => {
    const a = { seq: 1, at: new Date(0), actor: 'a', action: 'x', subject: null, details: { x: 1, y: { b: 2, a: 1 } } };
    const b = { ...a, details: { y: { a: 1, b: 2 }, x: 1 } };
    expect(auditHash(GENESIS_HASH, a)).toBe(auditHash(GENESIS_HASH, b));
  });
});

describe('verifyAuditChain', () => {
  it('accepts a valid chain and the empty chain', () => {
    expect(verifyAuditChain(chain(5))).toEqual({ ok: true, count: 5 });
    expect(verifyAuditChain([])).toEqual({ ok: true, count: 0 });
  });

  it('accepts a page verified from an anchor', () => {
    const events = chain(6);
    const anchor = events[2]!;
    expect(verifyAuditChain(events.slice(3), { seq: anchor.seq, hash: anchor.hash })).toEqual({ ok: true, count: 3 });
    expect(verifyAuditChain(events.slice(3))).toMatchObject({ ok: false, brokenAtSeq: 4 });
  });

  it('detects a changed field', () => {
    const fields = ['actor', 'action', 'subject', 'details', 'at'] as const;
    for (const field of fields) {
      const events = clone(chain(5));
      const ev = events[2]!;
      if (field === 'at') ev.at = new Date(ev.at.getTime() + 1);
      else if (field === 'details') ev.details = { ...ev.details, reason: 99 };
      else if (field === 'subject') ev.subject = 'someone-else';
      else ev[field] = `${ev[field]}!`;
      const result = verifyAuditChain(events);
      expect(result, field).toMatchObject({ ok: false, brokenAtSeq: 3 });
    }
  });

  it('detects a changed hash or prevHash', () => {
    const a = clone(chain(4));
    a[1]!.hash = 'a'.repeat(64);
    expect(verifyAuditChain(a)).toMatchObject({ ok: false, brokenAtSeq: 2 });
    const b = clone(chain(4));
    b[2]!.prevHash = 'b'.repeat(64);
    expect(verifyAuditChain(b)).toMatchObject({ ok: false, brokenAtSeq: 3 });
  });

  it('detects a deleted row', () => {
    const events = chain(5);
    const deletedMiddle = [...events.slice(0, 2), ...events.slice(3)];
    expect(verifyAuditChain(deletedMiddle)).toMatchObject({ ok: false, brokenAtSeq: 4 });
    expect(verifyAuditChain(events.slice(1))).toMatchObject({ ok: false, brokenAtSeq: 2 });
  });

  it('detects a deleted row even when the later seqs were renumbered', () => {
    const events = clone(chain(5));
    const renumbered = [...events.slice(0, 2), ...events.slice(3).map((e) => ({ ...e, seq: e.seq - 1 }))];
    expect(verifyAuditChain(renumbered)).toMatchObject({ ok: false, brokenAtSeq: 3 });
  });

  it('detects reordered rows', () => {
    const events = chain(5);
    const swapped = [events[0]!, events[2]!, events[1]!, events[3]!, events[4]!];
    expect(verifyAuditChain(swapped)).toMatchObject({ ok: false, brokenAtSeq: 3 });
    // swapping the seq numbers too does not help: the links no longer match
    const relabelled = clone(swapped).map((e, i) => ({ ...e, seq: i + 1 }));
    expect(verifyAuditChain(relabelled)).toMatchObject({ ok: false, brokenAtSeq: 2 });
  });

  it('detects a wrong genesis', () => {
    const events: AuditEvent[] = [];
    let prevHash = '1'.repeat(64);
    for (let seq = 1; seq <= 3; seq++) {
      const fields = { seq, at: new Date(seq), actor: 'a', action: 'x', subject: null, details: {} };
      const hash = auditHash(prevHash, fields);
      events.push({ ...fields, prevHash, hash });
      prevHash = hash;
    }
    const result = verifyAuditChain(events);
    expect(result).toMatchObject({ ok: false, brokenAtSeq: 1 });
    if (!result.ok) expect(result.reason).toMatch(/genesis/);
  });
});
