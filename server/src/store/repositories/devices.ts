/** Devices and services: identity, status and presence. */
import { FleetgateError } from '../../errors.js';
import { decodeCursor, KEY, type Page, type PageOptions, toPage } from '../paging.js';
import { DEVICE_COLS, mapDevice } from '../rows.js';
import { count } from '../sql-executor.js';
import type { SqlContext } from '../transactions.js';
import type { DeviceRecord, DeviceStatus, IdentityKind } from '../types.js';

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

export async function markSeen(
  cx: SqlContext,
  entries: { deviceId: string; at: Date; online: boolean }[],
): Promise<void> {
  if (entries.length === 0) return;
  // One statement for the whole batch. Per device only the newest entry counts (the last one
  // wins on a tie), and a batch older than what is stored does not move presence backwards.
  const latest = new Map<string, { deviceId: string; at: string; online: boolean }>();
  for (const e of entries) {
    const prev = latest.get(e.deviceId);
    if (!prev || e.at.getTime() >= Date.parse(prev.at)) {
      latest.set(e.deviceId, { deviceId: e.deviceId, at: e.at.toISOString(), online: e.online });
    }
  }
  await cx.ex.query(
    `UPDATE devices AS d SET last_seen_at = v.at, online = v.online
     FROM jsonb_to_recordset($1::text::jsonb) AS v("deviceId" text, at timestamptz, online boolean)
     WHERE d.id = v."deviceId" AND (d.last_seen_at IS NULL OR d.last_seen_at <= v.at)`,
    [JSON.stringify([...latest.values()])],
  );
}

/** Devices in id order (byte order, the same on both backends), keyset-paged (paging.ts). */
export async function pageDevices(
  cx: SqlContext,
  opts: PageOptions & {
    kind?: IdentityKind | undefined;
    status?: DeviceStatus | undefined;
    online?: boolean | undefined;
    /** Ids starting with this text (byte-wise, the console's search). */
    prefix?: string | undefined;
    offset?: number | undefined;
  },
): Promise<Page<DeviceRecord>> {
  const after = opts.cursor ? decodeCursor(opts.cursor, 'devices', [KEY.text])[0]! : null;
  // starts_with compares bytes, like the "C" order of the keyset: no LIKE wildcards to escape.
  // The byte range [prefix, prefixEnd) says the same to the planner, which can then read only
  // that range of devices_id_bytes_idx (migration 5) instead of every row.
  const filter = (k: number, s: number, o: number, p: number, e: number) =>
    `($${k}::text IS NULL OR kind = $${k}::text) AND ($${s}::text IS NULL OR status = $${s}::text)
     AND ($${o}::boolean IS NULL OR online = $${o}::boolean) AND ($${p}::text IS NULL OR starts_with(id, $${p}::text))
     AND ($${p}::text IS NULL OR id COLLATE "C" >= $${p}::text COLLATE "C")
     AND ($${e}::text IS NULL OR id COLLATE "C" < $${e}::text COLLATE "C")`;
  const prefixEnd = opts.prefix ? byteSuccessor(opts.prefix) : null;
  const [kind, status, online, prefix] = [
    opts.kind ?? null,
    opts.status ?? null,
    opts.online ?? null,
    opts.prefix ?? null,
  ];
  const rows = await cx.ex.query(
    `SELECT ${DEVICE_COLS} FROM devices
     WHERE ${filter(1, 2, 6, 7, 8)} AND ($3::text IS NULL OR id COLLATE "C" > $3::text COLLATE "C")
     ORDER BY id COLLATE "C" LIMIT $4::bigint OFFSET coalesce($5::bigint, 0)`,
    [kind, status, after, count(opts.limit + 1), count(opts.offset), online, prefix, prefixEnd],
  );
  const total = await cx.ex.query(`SELECT count(*)::text AS n FROM devices WHERE ${filter(1, 2, 3, 4, 5)}`, [
    kind,
    status,
    online,
    prefix,
    prefixEnd,
  ]);
  return toPage('devices', rows, opts.limit, Number(total[0]?.n), (r) => [String(r.id)], mapDevice);
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
