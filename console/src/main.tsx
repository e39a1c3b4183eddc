/**
 * fleetgate operator console. Preact (3 KiB runtime, maintained) renders; every read and action
 * goes through /api/v1 (api.ts), the same API the CLI uses.
 */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, api, type Session, setSession, whenSignedOut } from './api.js';
import { FormError } from './common.js';
import { startLive, stopLive } from './live.js';
import { AuditPage, OperatorsPage, TokensPage } from './pages-admin.js';
import { DevicePage, DevicesPage } from './pages-devices.js';
import { FleetPage } from './pages-fleet.js';
import { ServicesPage } from './pages-services.js';
import { linkClick, navigate, useRoute } from './router.js';
import './style.css';

const NAV = [
  ['/', 'Fleet'],
  ['/devices', 'Devices'],
  ['/tokens', 'Tokens'],
  ['/services', 'Services'],
  ['/audit', 'Audit'],
  ['/operators', 'Operators'],
] as const;

function SignIn(props: { notice: string; onSignedIn: (s: Session) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      const s = await api<Session>('POST', '/session', { token: token.trim() });
      setToken('');
      props.onSignedIn(s);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? 'That operator token is not valid.' : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin" id="main">
      <h1>fleetgate console</h1>
      {props.notice && (
        <p class="notice" role="status">
          {props.notice}
        </p>
      )}
      <form onSubmit={submit}>
        <label for="token">Operator token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          required
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
        />
        <p class="hint">The token is exchanged for a session cookie and is not stored in the browser.</p>
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        <FormError text={error} />
      </form>
    </main>
  );
}

function App() {
  const route = useRoute();
  const [session, setS] = useState<Session | null | undefined>(undefined);
  const [notice, setNotice] = useState('');

  const signedIn = (s: Session | null) => {
    setSession(s);
    setS(s);
    if (s) startLive();
    else stopLive();
  };

  useEffect(() => {
    whenSignedOut((why) => {
      setNotice(why);
      signedIn(null);
    });
    api<Session>('GET', '/session').then(
      (s) => signedIn(s),
      (e: unknown) => {
        if (e instanceof ApiError && e.code === 'SESSION_EXPIRED') setNotice('Your session expired. Sign in again.');
        else if (e instanceof ApiError && e.status === 0) setNotice(e.message);
        signedIn(null);
      },
    );
  }, []);

  if (session === undefined) return <p class="loading">Loading…</p>;
  if (session === null) {
    return (
      <SignIn
        notice={notice}
        onSignedIn={(s) => {
          setNotice('');
          signedIn(s);
        }}
      />
    );
  }
  const signOut = async () => {
    try {
      await api('DELETE', '/session');
    } finally {
      setNotice('Signed out.');
      signedIn(null);
      navigate('/');
    }
  };
  const section = `/${route.path.split('/')[1] ?? ''}`;
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header>
        <span class="brand">fleetgate</span>
        <nav aria-label="Main">
          <ul>
            {NAV.map(([to, label]) => (
              <li key={to}>
                <a
                  href={`/console${to}`}
                  aria-current={section === to ? 'page' : undefined}
                  onClick={(e) => linkClick(e, to)}
                >
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span class="who">
          operator <strong>{session.operator.id}</strong>
        </span>
        <button type="button" class="secondary" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main id="main">
        <Page path={route.path} params={route.params} />
      </main>
    </>
  );
}

function Page(props: { path: string; params: URLSearchParams }) {
  const parts = props.path.split('/').filter(Boolean);
  switch (parts[0]) {
    case undefined:
      return <FleetPage />;
    case 'devices':
      return parts[1] ? <DevicePage id={decodeURIComponent(parts[1])} /> : <DevicesPage params={props.params} />;
    case 'tokens':
      return <TokensPage />;
    case 'services':
      return <ServicesPage />;
    case 'audit':
      return <AuditPage params={props.params} />;
    case 'operators':
      return <OperatorsPage />;
    default:
      return (
        <section>
          <h1>Not found</h1>
          <p>There is no console page at this address.</p>
        </section>
      );
  }
}

const root = document.getElementById('app');
if (root) render(<App />, root);
