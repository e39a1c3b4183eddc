import { useEffect, useState } from 'preact/hooks';
import { api, download, query } from './api.js';
import {
  type AuditEvent,
  apiMessage,
  ColumnHeads,
  Empty,
  ErrorState,
  FormError,
  Pager,
  RowAction,
  TextField,
  useListing,
  when,
} from './common.js';
import { navigate } from './router.js';

interface TokenRow {
  id: string;
  deviceId: string;
  state: string;
  createdAt: string;
  expiresAt: string;
  createdBy: string;
}
interface Issued {
  deviceId: string;
  token: string;
  expiresAt: string;
}

function toCsv(rows: Issued[]): string {
  // RFC 4180: CRLF line ends; the values (ids, base64url tokens, ISO dates) need no quoting.
  return (
    ['deviceId,token,expiresAt', ...rows.map((r) => `${r.deviceId},${r.token},${r.expiresAt}`)].join('\r\n') + '\r\n'
  );
}

export function TokensPage() {
  const { rows, total, error, setError, load } = useListing<TokenRow>(
    `/tokens${query({ state: 'unused', limit: 100 })}`,
    'tokens',
  );
  const [mode, setMode] = useState<'one' | 'batch'>('batch');
  const [deviceId, setDeviceId] = useState('');
  const [prefix, setPrefix] = useState('');
  const [count, setCount] = useState('5');
  const [ttl, setTtl] = useState('24h');
  const [issued, setIssued] = useState<Issued[] | null>(null);
  const [formError, setFormError] = useState('');
  const create = async (e: Event) => {
    e.preventDefault();
    setFormError('');
    try {
      const body =
        mode === 'one' ? { deviceId: deviceId.trim(), ttl } : { prefix: prefix.trim(), count: Number(count), ttl };
      const r = await api<{ tokens: Issued[] }>('POST', '/tokens', body);
      setIssued(r.tokens);
      void load();
    } catch (err) {
      setFormError(apiMessage(err));
    }
  };
  const expire = async (id: string) => {
    try {
      await api('POST', `/tokens/${id}/revoke`);
      void load();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <section>
      <h1>Enrollment tokens</h1>
      <form class="panel" onSubmit={create}>
        <h2>Create</h2>
        <fieldset>
          <legend>For</legend>
          <label>
            <input type="radio" name="mode" checked={mode === 'one'} onChange={() => setMode('one')} /> one device
          </label>
          <label>
            <input type="radio" name="mode" checked={mode === 'batch'} onChange={() => setMode('batch')} /> a factory
            batch
          </label>
        </fieldset>
        {mode === 'one' ? (
          <TextField id="token-device" label="Device id" required value={deviceId} onValue={setDeviceId} />
        ) : (
          <div class="row">
            <TextField id="token-prefix" label="Id prefix" required value={prefix} onValue={setPrefix} />
            <TextField
              id="token-count"
              label="How many"
              type="number"
              min={1}
              max={10000}
              required
              value={count}
              onValue={setCount}
            />
          </div>
        )}
        <TextField id="token-ttl" label="Valid for" value={ttl} onValue={setTtl} />
        <button type="submit">Create tokens</button>
        <FormError text={formError} />
      </form>
      {issued && (
        <div class="panel secret" role="status">
          <h2>{issued.length} new tokens</h2>
          <p>Download them now: the secrets are shown only once and the server keeps only their hashes.</p>
          <button type="button" onClick={() => download('fleetgate-tokens.csv', 'text/csv', toCsv(issued))}>
            Download CSV
          </button>{' '}
          <button
            type="button"
            onClick={() =>
              download('fleetgate-tokens.json', 'application/json', `${JSON.stringify({ tokens: issued }, null, 2)}\n`)
            }
          >
            Download JSON
          </button>{' '}
          <button type="button" class="secondary" onClick={() => setIssued(null)}>
            Done, forget them
          </button>
        </div>
      )}
      <h2>Unused tokens ({total})</h2>
      {error ? (
        <ErrorState error={error} retry={load} />
      ) : !rows ? (
        <p class="loading">Loading…</p>
      ) : rows.length === 0 ? (
        <Empty>No unused token.</Empty>
      ) : (
        <table>
          <ColumnHeads names={['Device', 'Created', 'Expires', 'By']} action />
          <tbody>
            {rows.map((t) => (
              <tr key={t.id}>
                <td>{t.deviceId}</td>
                <td>{when(t.createdAt)}</td>
                <td>{when(t.expiresAt)}</td>
                <td>{t.createdBy}</td>
                <td>
                  <RowAction label={`Expire token for ${t.deviceId}`} onClick={() => expire(t.id)}>
                    Expire
                  </RowAction>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

type Verify = { ok: boolean; count: number; brokenAtSeq?: number; reason?: string };

export function AuditPage(props: { params: URLSearchParams }) {
  const cursor = props.params.get('cursor') ?? '';
  const [page, setPage] = useState<{ events: AuditEvent[]; total: number; nextCursor: string | null } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [verify, setVerify] = useState<Verify | null>(null);
  const [verifyError, setVerifyError] = useState('');
  const load = () =>
    api<{ events: AuditEvent[]; total: number; nextCursor: string | null }>(
      'GET',
      `/audit${query({ cursor, limit: 50 })}`,
    ).then(setPage, (e: unknown) => setError(e));
  useEffect(() => {
    void load();
  }, [cursor]);
  const runVerify = async () => {
    setVerifyError('');
    setVerify(null);
    try {
      setVerify(await api<Verify>('GET', '/audit/verify'));
    } catch (e) {
      setVerifyError(apiMessage(e));
    }
  };
  return (
    <section>
      <h1>Audit log</h1>
      <div class="panel">
        <button type="button" onClick={runVerify}>
          Verify the hash chain
        </button>
        <p data-testid="verify-result" role="status" aria-live="polite">
          {verify
            ? verify.ok
              ? `Chain intact: ${verify.count} events verified.`
              : `Chain broken at event #${verify.brokenAtSeq}: ${verify.reason}`
            : verifyError}
        </p>
      </div>
      {error ? (
        <ErrorState error={error} retry={load} />
      ) : !page ? (
        <p class="loading">Loading…</p>
      ) : page.events.length === 0 ? (
        <Empty>No audit event yet.</Empty>
      ) : (
        <>
          <table>
            <ColumnHeads names={['Seq', 'At', 'Actor', 'Action', 'Subject']} />
            <tbody>
              {page.events.map((e) => (
                <tr key={e.seq}>
                  <td>{e.seq}</td>
                  <td>{when(e.at)}</td>
                  <td>{e.actor}</td>
                  <td>{e.action}</td>
                  <td>{e.subject ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Pager
            cursor={cursor}
            nextCursor={page.nextCursor}
            onNext={(next) => navigate(`/audit${query({ cursor: next })}`)}
          />
        </>
      )}
    </section>
  );
}

interface OperatorRow {
  id: string;
  name: string;
  createdAt: string;
  revokedAt: string | null;
}

export function OperatorsPage() {
  const [rows, setRows] = useState<OperatorRow[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [name, setName] = useState('');
  const [created, setCreated] = useState<{ name: string; token: string } | null>(null);
  const [formError, setFormError] = useState('');
  const load = () =>
    api<{ operators: OperatorRow[] }>('GET', '/operators?limit=1000').then(
      (r) => setRows(r.operators),
      (e: unknown) => setError(e),
    );
  useEffect(() => {
    void load();
  }, []);
  const create = async (e: Event) => {
    e.preventDefault();
    setFormError('');
    try {
      const r = await api<{ id: string; name: string; token: string }>('POST', '/operators', { name: name.trim() });
      setCreated(r);
      setName('');
      void load();
    } catch (err) {
      setFormError(apiMessage(err));
    }
  };
  const revoke = async (id: string) => {
    setFormError('');
    try {
      await api('DELETE', `/operators/${encodeURIComponent(id)}`);
      void load();
    } catch (err) {
      setFormError(apiMessage(err));
    }
  };
  return (
    <section>
      <h1>Operators</h1>
      <form class="panel" onSubmit={create}>
        <label for="operator-name">New operator name</label>
        <input
          id="operator-name"
          required
          value={name}
          onInput={(e) => setName((e.target as HTMLInputElement).value)}
        />
        <button type="submit">Create operator</button>
        <FormError text={formError} />
      </form>
      {created && (
        <div class="panel secret" role="status">
          <p>
            Token for <strong>{created.name}</strong>, shown once:
          </p>
          <button
            type="button"
            onClick={() => download(`fleetgate-operator-${created.name}.txt`, 'text/plain', `${created.token}\n`)}
          >
            Download token
          </button>{' '}
          <button type="button" class="secondary" onClick={() => setCreated(null)}>
            Done
          </button>
        </div>
      )}
      {error ? (
        <ErrorState error={error} retry={load} />
      ) : !rows ? (
        <p class="loading">Loading…</p>
      ) : (
        <table>
          <ColumnHeads names={['Name', 'Id', 'Created', 'Revoked']} action />
          <tbody>
            {rows.map((o) => (
              <tr key={o.id}>
                <td>{o.name}</td>
                <td>
                  <code>{o.id}</code>
                </td>
                <td>{when(o.createdAt)}</td>
                <td>{when(o.revokedAt)}</td>
                <td>
                  {!o.revokedAt && (
                    <RowAction label={`Revoke operator ${o.name}`} onClick={() => revoke(o.id)}>
                      Revoke
                    </RowAction>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
