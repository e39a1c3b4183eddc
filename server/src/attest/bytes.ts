/**
 * A bounds-checked big-endian reader for TPM 2.0 marshalled structures (TPM 2.0 Part 2, clause 4:
 * every integer is big-endian, every TPM2B is a UINT16 size followed by that many bytes). Every
 * read past the end, and every size larger than the structure allows, is a
 * TPM_EVIDENCE_MALFORMED FleetgateError: hostile bytes never become a RangeError (a 5xx later).
 */
import { FleetgateError } from '../errors.js';

export function malformed(what: string, details?: Record<string, unknown>): FleetgateError {
  return new FleetgateError('TPM_EVIDENCE_MALFORMED', what, details);
}

export class TpmReader {
  private pos = 0;
  constructor(
    private readonly buf: Uint8Array,
    private readonly what: string,
  ) {}

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private take(n: number, field: string): Uint8Array {
    if (n > this.remaining) {
      throw malformed(`${this.what}: ${field} needs ${n} bytes at offset ${this.pos}, ${this.remaining} left`);
    }
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  u8(field: string): number {
    return this.take(1, field)[0]!;
  }

  u16(field: string): number {
    const b = this.take(2, field);
    return (b[0]! << 8) | b[1]!;
  }

  u32(field: string): number {
    const b = this.take(4, field);
    return ((b[0]! << 24) >>> 0) + ((b[1]! << 16) | (b[2]! << 8) | b[3]!);
  }

  u64(field: string): bigint {
    const b = this.take(8, field);
    return Buffer.from(b).readBigUInt64BE(0);
  }

  bytes(n: number, field: string): Buffer {
    return Buffer.from(this.take(n, field));
  }

  /** A TPM2B: UINT16 size, then the bytes; `max` is the structure's own bound (Part 2 10.4). */
  tpm2b(field: string, max: number): Buffer {
    const size = this.u16(`${field}.size`);
    if (size > max) throw malformed(`${this.what}: ${field} is ${size} bytes, more than ${max}`);
    return this.bytes(size, field);
  }

  /** The structure must end exactly here: trailing bytes are refused, never ignored. */
  end(): void {
    if (this.remaining !== 0) {
      throw malformed(`${this.what}: ${this.remaining} unexpected trailing bytes at offset ${this.pos}`);
    }
  }
}

export function u16be(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function u32be(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** Marshals a TPM2B (UINT16 size || bytes). */
export function tpm2b(data: Uint8Array): Buffer {
  if (data.length > 0xffff) throw new RangeError('TPM2B larger than 65535 bytes');
  return Buffer.concat([u16be(data.length), data]);
}
