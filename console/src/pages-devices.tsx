import type { DeviceJson } from '@fleetgate/device-client/operator-api';
import { useEffect, useState } from 'preact/hooks';
import { api, query } from './api.js';
import {
  type AuditEvent,
  apiMessage,
  ColumnHeads,
  Empty,
  ErrorState,
  FormError,
  Pager,
  TextField,
  when,
} from './common.js';
import { onLive } from './live.js';
import { linkClick, navigate } from './router.js';

// The operator API's shapes, written once in the device client (types only: nothing of it is bundled).
type Device = DeviceJson;
interface DevicePage {
  devices: Device[];
  total: number;
  nextCursor: string | null;
}

const STATUS_OPTIONS = ['', 'active', 'revoked', 'reprovisioning', 'decommissioned'].map((s): [string, string] => [
  s,
  s || 'any',
]);
const PRESENCES: [string, string][] = [
  ['', 'any'],
  ['true', 'online'],
  ['false', 'offline'],
];
/** The key types the server recognises (GET /api/v1/devices?keyType=, docs/console.md). */
const KEY_TYPES: [string, string][] = [
  ['', 'any'],
  ['ec-p256', 'EC P-256'],
  ['ec-p384', 'EC P-384'],
  ['ed25519', 'Ed25519'],
  ['rsa-2048', 'RSA 2048'],
  ['rsa-3072', 'RSA 3072'],
  ['rsa-4096', 'RSA 4096'],
  ['other', 'other'],
];
/** The orders the API offers; '' is its default (id). */
const SORTS: [string, string][] = [
  ['', 'id'],
  ['-id', 'id, descending'],
  ['-createdAt', 'enrolled, newest first'],
  ['createdAt', 'enrolled, oldest first'],
  ['-lastSeenAt', 'last seen, most recent first'],
  ['lastSeenAt', 'last seen, longest ago first'],
  ['certNotAfter', 'certificate expiry, soonest first'],
  ['-certNotAfter', 'certificate expiry, latest first'],
];

/** A filter whose id is its URL parameter: picking an option navigates with it. */
function Filter(props: {
  id: string;
  label: string;
  value: string;
  options: [string, string][];
  onPick: (next: Record<string, string>) => void;
}) {
  return (
    <div>
      <label for={props.id}>{props.label}</label>
      <select
        id={props.id}
        value={props.value}
        onChange={(e) => props.onPick({ [props.id]: (e.target as HTMLSelectElement).value })}
      >
        {props.options.map(([v, label]) => (
          <option key={v} value={v}>
            {label}
          </option>
        ))}
      </select>
    </div>
  );
}

/** Search, filters and the page cursor live in the URL, so back/forward and links restore them. */
export function DevicesPage(props: { params: URLSearchParams }) {
  const prefix = props.params.get('prefix') ?? '';
  const status = props.params.get('status') ?? '';
  const online = props.params.get('online') ?? '';
  const keyType = props.params.get('keyType') ?? '';
  const sort = props.params.get('sort') ?? '';
  const cursor = props.params.get('cursor') ?? '';
  const [page, setPage] = useState<DevicePage | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [text, setText] = useState(prefix);
  const load = () => {
    setError(null);
    return api<DevicePage>(
      'GET',
      `/devices${query({ prefix, status, online, keyType, sort, cursor, kind: 'device', limit: 50 })}`,
    ).then(setPage, (e: unknown) => setError(e));
  };
  useEffect(() => {
    setText(prefix);
    void load();
  }, [prefix, status, online, keyType, sort, cursor]);
  useEffect(
    () =>
      onLive((ev) => {
        if (ev.type === 'presence' || ev.type === 'revoked') {
          setPage((p) =>
            p
              ? {
                  ...p,
                  devices: p.devices.map((d) =>
                    d.id !== ev.deviceId
                      ? d
                      : ev.type === 'presence'
                        ? { ...d, online: ev.online }
                        : { ...d, status: 'revoked' },
                  ),
                }
              : p,
          );
        }
      }),
    [],
  );
  const go = (next: Record<string, string>) =>
    navigate(`/devices${query({ prefix, status, online, keyType, sort, ...next, cursor: next.cursor ?? '' })}`);
  return (
    <section>
      <h1>Devices</h1>
      <form
        class="filters"
        aria-label="Search devices"
        onSubmit={(e) => {
          e.preventDefault();
          go({ prefix: text.trim() });
        }}
      >
        <TextField id="prefix" label="Device id starts with" name="prefix" value={text} onValue={setText} />
        <Filter id="status" label="Status" value={status} options={STATUS_OPTIONS} onPick={go} />
        <Filter id="online" label="Presence" value={online} options={PRESENCES} onPick={go} />
        <Filter id="keyType" label="Key type" value={keyType} options={KEY_TYPES} onPick={go} />
        <Filter id="sort" label="Sort by" value={sort} options={SORTS} onPick={go} />
        <button type="submit">Search</button>
      </form>
      {error ? (
        <ErrorState error={error} retry={load} />
      ) : !page ? (
        <p class="loading">Loading devices…</p>
      ) : page.devices.length === 0 ? (
        <Empty>No device matches. Clear the filters or create enrollment tokens on the Tokens page.</Empty>
      ) : (
        <>
          <p class="muted" aria-live="polite">
            {page.total} matching, sorted by {SORTS.find(([v]) => v === sort)?.[1] ?? sort}
          </p>
          <table>
            <ColumnHeads names={['Id', 'Status', 'Presence', 'Last seen', 'Key type', 'Certificate expires']} />
            <tbody>
              {page.devices.map((d) => (
                <tr key={d.id}>
                  <td>
                    <a
                      href={`/console/devices/${encodeURIComponent(d.id)}`}
                      onClick={(e) => linkClick(e, `/devices/${encodeURIComponent(d.id)}`)}
                    >
                      {d.id}
                    </a>
                  </td>
                  <td>{d.status}</td>
                  <td>{d.online ? 'online' : 'offline'}</td>
                  <td>{when(d.lastSeenAt)}</td>
                  <td>{d.current?.keyType ?? '—'}</td>
                  <td>{when(d.current?.notAfter ?? null)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Pager cursor={cursor} nextCursor={page.nextCursor} onNext={(next) => go({ cursor: next })} />
        </>
      )}
    </section>
  );
}

export function DevicePage(props: { id: string }) {
  const [device, setDevice] = useState<Device | null>(null);
  const [events, setEvents] = useState<AuditEvent[]>([]);
  const [error, setError] = useState<unknown>(null);
  const load = async () => {
    try {
      setDevice(await api<Device>('GET', `/devices/${encodeURIComponent(props.id)}`));
      setError(null);
      // The audit API pages the chain in seq order: the newest 1,000 are scanned for this device.
      const head = await api<{ total: number }>('GET', '/audit?limit=1');
      const afterSeq = Math.max(0, head.total - 1000);
      const audit = await api<{ events: AuditEvent[] }>('GET', `/audit${query({ limit: 1000, afterSeq })}`);
      setEvents(audit.events.filter((e) => e.subject === props.id || e.details.deviceId === props.id));
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    void load();
    return onLive((ev) => {
      if (ev.deviceId !== props.id) return;
      if (ev.type === 'presence') setDevice((d) => (d ? { ...d, online: ev.online, lastSeenAt: ev.at } : d));
      else void load();
    });
  }, [props.id]);
  if (error) return <ErrorState error={error} retry={load} />;
  if (!device) return <p class="loading">Loading device…</p>;
  return (
    <section>
      <h1>
        Device <code>{device.id}</code>
      </h1>
      <dl class="facts">
        <dt>Status</dt>
        <dd data-testid="device-status">{device.status}</dd>
        <dt>Presence</dt>
        <dd data-testid="device-presence" aria-live="polite">
          {device.online ? 'online' : 'offline'}
        </dd>
        <dt>Last seen</dt>
        <dd>{when(device.lastSeenAt)}</dd>
        <dt>Enrolled</dt>
        <dd>{when(device.createdAt)}</dd>
      </dl>
      <h2>Certificates</h2>
      {(device.certificates ?? []).length === 0 ? (
        <Empty>No certificate issued yet.</Empty>
      ) : (
        // biome-ignore lint/a11y/noNoninteractiveTabindex: a table wider than the window scrolls sideways; focusable so the keyboard can scroll it (WCAG 2.1.1, axe scrollable-region-focusable)
        <table tabIndex={0} aria-label="Certificates">
          <ColumnHeads
            names={['Serial', 'Status', 'Key type', 'Valid from', 'Valid until', 'Revocation reason', 'Renewed from']}
          />
          <tbody>
            {(device.certificates ?? []).map((c) => (
              <tr key={c.serial}>
                <td>
                  <code>{c.serial}</code>
                </td>
                <td>{c.status}</td>
                <td>{c.keyType}</td>
                <td>{when(c.notBefore)}</td>
                <td>{when(c.notAfter)}</td>
                <td>{c.revocationReason ?? '—'}</td>
                <td>{c.renewedFrom ? <code>{c.renewedFrom}</code> : '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {device.status === 'active' && <RevokeForm id={device.id} done={load} />}
      <h2>Audit events</h2>
      {events.length === 0 ? (
        <Empty>No audit event names this device.</Empty>
      ) : (
        <ul class="events">
          {events.map((e) => (
            <li key={e.seq}>
              #{e.seq} {when(e.at)} <strong>{e.action}</strong> by {e.actor}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

const REASONS = ['unspecified', 'keyCompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation'];

/** Revocation is final: the operator types the device id to confirm (no accidental click). */
function RevokeForm(props: { id: string; done: () => void }) {
  const [reason, setReason] = useState('keyCompromise');
  const [confirm, setConfirm] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (confirm !== props.id) {
      setError('Type the device id exactly to confirm.');
      return;
    }
    setBusy(true);
    setError('');
    try {
      await api('POST', `/devices/${encodeURIComponent(props.id)}/revoke`, { reason });
      setConfirm('');
      props.done();
    } catch (err) {
      setError(apiMessage(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="danger" onSubmit={submit}>
      <h2>Revoke this device</h2>
      <p>Every valid certificate is revoked and a live connection is closed. This cannot be undone.</p>
      <label for="reason">Reason</label>
      <select id="reason" value={reason} onChange={(e) => setReason((e.target as HTMLSelectElement).value)}>
        {REASONS.map((r) => (
          <option key={r} value={r}>
            {r}
          </option>
        ))}
      </select>
      <label for="confirm">
        Type <code>{props.id}</code> to confirm
      </label>
      <input
        id="confirm"
        autoComplete="off"
        value={confirm}
        onInput={(e) => setConfirm((e.target as HTMLInputElement).value)}
      />
      <button type="submit" class="danger" disabled={busy || confirm !== props.id}>
        Revoke device
      </button>
      <FormError text={error} />
    </form>
  );
}
