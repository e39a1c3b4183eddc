/**
 * Services: issue a backend credential and download it once. The key pair and the CSR are made
 * in this page with WebCrypto (service-credential.ts, loaded only here); the server gets the CSR
 * through POST /api/v1/services, the same call `fleetgate service create` makes, audited with
 * the operator as actor. The key, the certificate and the CA chain are offered for download
 * until "Done, forget them" or leaving the page; nothing of them is stored anywhere.
 */
import { useState } from 'preact/hooks';
import { api, download, query } from './api.js';
import { apiMessage, ColumnHeads, Empty, ErrorState, FormError, TextField, useListing, when } from './common.js';

interface ServiceRow {
  id: string;
  status: string;
  createdAt: string;
  current: { serial: string; notAfter: string } | null;
}

interface Issued {
  name: string;
  serial: string;
  notAfter: string;
  certificatePem: string;
  chainPem: string;
}

/** What the page holds until it forgets it. */
interface Credential extends Issued {
  keyPem: string;
}

/** The server's service name grammar (server/src/identifiers.ts), checked here for a quick answer. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function ServicesPage() {
  const { rows, total, error, load } = useListing<ServiceRow>(
    `/devices${query({ kind: 'service', limit: 100 })}`,
    'devices',
  );
  const [name, setName] = useState('');
  const [busy, setBusy] = useState(false);
  const [formError, setFormError] = useState('');
  const [credential, setCredential] = useState<Credential | null>(null);
  const create = async (e: Event) => {
    e.preventDefault();
    setFormError('');
    const n = name.trim();
    if (!NAME.test(n)) {
      setFormError('A service name is 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit.');
      return;
    }
    setBusy(true);
    try {
      const { makeServiceRequest } = await import('./service-credential.js');
      const req = await makeServiceRequest(n);
      const issued = await api<Issued>('POST', '/services', { name: n, csr: req.csrPem });
      setCredential({ ...issued, keyPem: req.keyPem });
      setName('');
      void load();
    } catch (err) {
      setFormError(apiMessage(err));
    } finally {
      setBusy(false);
    }
  };
  const c = credential;
  return (
    <section>
      <h1>Backend services</h1>
      <form class="panel" onSubmit={create}>
        <h2>Create a service credential</h2>
        <p>
          The key pair is made in this browser; only a certificate request goes to the server. The key, the certificate
          and the CA chain are offered for download once: keep them on the service's machine. (From a shell on that
          machine: <code>fleetgate service create NAME --out DIR</code>.)
        </p>
        <TextField id="service-name" label="Service name" required autoComplete="off" value={name} onValue={setName} />
        <button type="submit" disabled={busy}>
          Create credential
        </button>
        <FormError text={formError} />
      </form>
      {c && (
        <div class="panel secret" role="status">
          <h2>
            Credential for <code>{c.name}</code>
          </h2>
          <p>
            Certificate <code>{c.serial}</code>, valid until {when(c.notAfter)}. Download it now: the private key exists
            only in this page and is gone once you leave it.
          </p>
          <button type="button" onClick={() => download(`${c.name}.key`, 'application/x-pem-file', c.keyPem)}>
            Download key
          </button>{' '}
          <button type="button" onClick={() => download(`${c.name}.crt`, 'application/x-pem-file', c.certificatePem)}>
            Download certificate
          </button>{' '}
          <button type="button" onClick={() => download('ca.pem', 'application/x-pem-file', c.chainPem)}>
            Download CA chain
          </button>{' '}
          <button
            type="button"
            onClick={() =>
              download(
                `${c.name}.json`,
                'application/json',
                `${JSON.stringify({ name: c.name, serial: c.serial, notAfter: c.notAfter, keyPem: c.keyPem, certificatePem: c.certificatePem, chainPem: c.chainPem }, null, 2)}\n`,
              )
            }
          >
            Download all as JSON
          </button>{' '}
          <button type="button" class="secondary" onClick={() => setCredential(null)}>
            Done, forget them
          </button>
        </div>
      )}
      <h2>Services</h2>
      {error ? (
        <ErrorState error={error} retry={load} />
      ) : !rows ? (
        <p class="loading">Loading services…</p>
      ) : rows.length === 0 ? (
        <Empty>No backend service yet.</Empty>
      ) : (
        <>
          <p class="muted">{total} services</p>
          {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a table wider than the window scrolls sideways; focusable so the keyboard can scroll it (WCAG 2.1.1, axe scrollable-region-focusable) */}
          <table tabIndex={0} aria-label="Services">
            <ColumnHeads names={['Name', 'Status', 'Created', 'Certificate expires']} />
            <tbody>
              {rows.map((r) => (
                <tr key={r.id}>
                  <td>{r.id}</td>
                  <td>{r.status}</td>
                  <td>{when(r.createdAt)}</td>
                  <td>{when(r.current?.notAfter ?? null)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
