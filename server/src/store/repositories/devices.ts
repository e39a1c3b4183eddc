/** Devices and services: identity, status and presence. */
import { FleetgateError } from '../../errors.js';
import { decodeCursor, KEY, micros, type Page, toPage } from '../paging.js';
import { DEVICE_COLS, mapDevice, str, strOrNull } from '../rows.js';
import { count, type Row, type SqlParam } from '../sql-executor.js';
import type { SqlContext } from '../transactions.js';
import {
  DEVICE_SORTS,
  type DevicePageOptions,
  type DeviceRecord,
  type DeviceSort,
  type DeviceStatus,
  deviceList,
  type IdentityKind,
} from '../types.js';

/**
 * How each sort reads devices: the column (null: the id alone) and the direction. Ascending
 * pages continue with keys greater than the cursor's, descending with smaller ones.
 */
const SORT_SPECS: Record<DeviceSort, { column: string | null; dir: 'ASC' | 'DESC'; cmp: '>' | '<' }> = {
  id: { column: null, dir: 'ASC', cmp: '>' },
  '-id': { column: null, dir: 'DESC', cmp: '<' },
  createdAt: { column: 'created_at', dir: 'ASC', cmp: '>' },
  '-createdAt': { column: 'created_at', dir: 'DESC', cmp: '<' },
  lastSeenAt: { column: 'last_seen_at', dir: 'ASC', cmp: '>' },
  '-lastSeenAt': { column: 'last_seen_at', dir: 'DESC', cmp: '<' },
  certNotAfter: { column: 'cert_not_after', dir: 'ASC', cmp: '>' },
  '-certNotAfter': { column: 'cert_not_after', dir: 'DESC', cmp: '<' },
};

export async function upsertDevice(cx: SqlContext, id: string, kind: IdentityKind): Promise<DeviceRecord> {
  // An existing device is returned unchanged (kind and status are not overwritten); the no-op
  // DO UPDATE is there so RETURNING yields the row in both cases.
  const rows = await cx.ex.query(
    `INSERT INTO devices (id, kind) VALUES ($1::text, $2::text)
     ON CONFLICT (id) DO UPDATE SET id = devices.id
     RETURNING ${DEVICE_COLS}`,
    [id, kind],
  );
  return mapDevice(rows[0]!);
}

export async function getDevice(cx: SqlContext, id: string): Promise<DeviceRecord | null> {
  const rows = await cx.ex.query(`SELECT ${DEVICE_COLS} FROM devices WHERE id = $1::text`, [id]);
  return rows[0] ? mapDevice(rows[0]) : null;
}

/**
 * The device, its row locked until the transaction ends (SELECT ... FOR UPDATE): a concurrent
 * status change waits, and this one reads the newest committed row.
 */
export async function lockDevice(cx: SqlContext, id: string): Promise<DeviceRecord | null> {
  const rows = await cx.ex.query(`SELECT ${DEVICE_COLS} FROM devices WHERE id = $1::text FOR UPDATE`, [id]);
  return rows[0] ? mapDevice(rows[0]) : null;
}

export async function listDevices(
  cx: SqlContext,
  opts: { kind?: IdentityKind; status?: DeviceStatus; limit?: number; offset?: number } = {},
): Promise<DeviceRecord[]> {
  const rows = await cx.ex.query(
    `SELECT ${DEVICE_COLS} FROM devices
     WHERE ($1::text IS NULL OR kind = $1::text) AND ($2::text IS NULL OR status = $2::text)
     ORDER BY id COLLATE "C"
     LIMIT $3::bigint OFFSET coalesce($4::bigint, 0)`,
    [opts.kind ?? null, opts.status ?? null, count(opts.limit), count(opts.offset)],
  );
  return rows.map(mapDevice);
}

export async function setDeviceStatus(cx: SqlContext, id: string, status: DeviceStatus): Promise<void> {
  const rows = await cx.ex.query('UPDATE devices SET status = $2::text WHERE id = $1::text RETURNING id', [id, status]);
  if (rows.length === 0) throw new FleetgateError('DEVICE_NOT_FOUND', `device ${JSON.stringify(id)} not found`);
}

export function markSeen(cx: SqlContext, entries: { deviceId: string; at: Date; online: boolean }[]): Promise<void> {
  if (entries.length === 0) return Promise.resolve();
  // One statement for the whole batch. Per device only the newest entry counts (the last one
  // wins on a tie), and a batch older than what is stored does not move presence backwards.
  const latest = new Map<string, { deviceId: string; at: string; online: boolean }>();
  for (const e of entries) {
    const prev = latest.get(e.deviceId);
    if (!prev || e.at.getTime() >= Date.parse(prev.at)) {
      latest.set(e.deviceId, { deviceId: e.deviceId, at: e.at.toISOString(), online: e.online });
    }
  }
  return cx.atomic(async (tx) => {
    const rows = await tx.ex.query(
      `UPDATE devices AS d SET last_seen_at = v.at, online = v.online
       FROM jsonb_to_recordset($1::text::jsonb) AS v("deviceId" text, at timestamptz, online boolean)
       WHERE d.id = v."deviceId" AND (d.last_seen_at IS NULL OR d.last_seen_at <= v.at)
       RETURNING d.id`,
      [JSON.stringify([...latest.values()])],
    );
    // What was applied, as one activity event (the console's live view on every node).
    if (rows.length === 0) return;
    const applied = rows.map((r) => latest.get(str(r.id))).filter((e) => e !== undefined);
    await tx.raise({
      type: 'presence',
      entries: applied.map((e) => ({ deviceId: e.deviceId, online: e.online, at: new Date(e.at) })),
    });
  });
}

/**
 * One page of devices in the requested order (DEVICE_SORTS), keyset-paged (paging.ts). Every
 * order ends with the id in byte order, so it is total; rows whose sort column is NULL (never
 * seen, no unrevoked certificate) come last in both directions. A cursor is bound to its order:
 * its list name carries the sort, so one from another order is CURSOR_INVALID.
 */
export async function pageDevices(cx: SqlContext, opts: DevicePageOptions): Promise<Page<DeviceRecord>> {
  const sort = opts.sort ?? 'id';
  const spec = SORT_SPECS[sort];
  if (spec === undefined) throw new FleetgateError('BAD_REQUEST', `sort must be one of ${DEVICE_SORTS.join(', ')}`);
  const list = deviceList(sort);
  const prefixEnd = opts.prefix ? byteSuccessor(opts.prefix) : null;
  // $1-$7: the filters, shared by the page and the count.
  const params: SqlParam[] = [
    opts.kind ?? null,
    opts.status ?? null,
    opts.online ?? null,
    opts.prefix ?? null,
    prefixEnd,
    opts.keyType ?? null,
    opts.now ?? new Date(),
  ];
  // starts_with compares bytes, like the "C" order of the keyset: no LIKE wildcards to escape.
  // The byte range [prefix, prefixEnd) says the same to the planner, which can then read only
  // that range of devices_id_bytes_idx (migration 5) instead of every row. The key type is the
  // one of the newest unrevoked certificate (migration 6), and only while it has not expired: the
  // same certificate the inventory shows as current.
  const filter = `($1::text IS NULL OR kind = $1::text) AND ($2::text IS NULL OR status = $2::text)
     AND ($3::boolean IS NULL OR online = $3::boolean) AND ($4::text IS NULL OR starts_with(id, $4::text))
     AND ($4::text IS NULL OR id COLLATE "C" >= $4::text COLLATE "C")
     AND ($5::text IS NULL OR id COLLATE "C" < $5::text COLLATE "C")
     AND ($6::text IS NULL OR (cert_key_type = $6::text AND cert_not_after > $7::timestamptz))`;
  const limit = count(opts.limit + 1);
  const offset = count(opts.offset);
  const id = 'id COLLATE "C"';
  let rows: Row[];
  if (spec.column === null) {
    const after = opts.cursor ? decodeCursor(opts.cursor, list, [KEY.text])[0]! : null;
    rows = await cx.ex.query(
      `SELECT ${DEVICE_COLS} FROM devices
       WHERE ${filter} AND ($8::text IS NULL OR ${id} ${spec.cmp} $8::text COLLATE "C")
       ORDER BY ${id} ${spec.dir} LIMIT $9::bigint OFFSET coalesce($10::bigint, 0)`,
      [...params, after, limit, offset],
    );
  } else {
    // Two index-ordered parts: the rows with a value, after the cursor by a row comparison
    // (which the (column, id) index answers directly), then the rows without one, by id. A
    // cursor inside the NULL part skips the first part altogether.
    const after = opts.cursor ? decodeCursor(opts.cursor, list, [KEY.microsOrNone, KEY.text]) : null;
    const atNull = after !== null && after[0] === '';
    const col = spec.column;
    const key = `(timestamptz 'epoch' + $8::bigint * interval '1 microsecond')`;
    rows = await cx.ex.query(
      `SELECT * FROM (
         (SELECT ${DEVICE_COLS}, ${col} AS sort_at, ${micros(col)}::text AS k_at FROM devices
          WHERE ${filter} AND ${col} IS NOT NULL AND NOT $11::boolean
            AND ($9::text IS NULL OR (${col}, ${id}) ${spec.cmp} (${key}, $9::text COLLATE "C"))
          ORDER BY ${col} ${spec.dir}, ${id} ${spec.dir} LIMIT $10::bigint + coalesce($12::bigint, 0))
         UNION ALL
         (SELECT ${DEVICE_COLS}, NULL::timestamptz AS sort_at, NULL::text AS k_at FROM devices
          WHERE ${filter} AND ${col} IS NULL AND (NOT $11::boolean OR ${id} ${spec.cmp} $9::text COLLATE "C")
          ORDER BY ${id} ${spec.dir} LIMIT $10::bigint + coalesce($12::bigint, 0))
       ) AS page
       ORDER BY sort_at IS NULL, sort_at ${spec.dir}, id COLLATE "C" ${spec.dir}
       LIMIT $10::bigint OFFSET coalesce($12::bigint, 0)`,
      [...params, atNull ? null : (after?.[0] ?? null), after?.[1] ?? null, limit, atNull, offset],
    );
  }
  const total = await cx.ex.query(`SELECT count(*)::text AS n FROM devices WHERE ${filter}`, params);
  const keyOf = spec.column === null ? (r: Row) => [str(r.id)] : (r: Row) => [strOrNull(r.k_at) ?? '', str(r.id)];
  return toPage(list, rows, opts.limit, Number(total[0]?.n), keyOf, mapDevice);
}

/**
 * The smallest text above every text starting with `prefix` in byte order: the last character
 * plus one. Only for ASCII endings (device ids are ASCII by grammar); otherwise null, and the
 * starts_with test alone decides.
 */
function byteSuccessor(prefix: string): string | null {
  const last = prefix.charCodeAt(prefix.length - 1);
  if (!(last >= 0x20 && last < 0x7e)) return null;
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}
