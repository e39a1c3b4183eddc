import type { ComponentChildren, InputHTMLAttributes } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, api } from './api.js';

export function ErrorState(props: { error: unknown; retry?: () => void }) {
  const e = props.error;
  const text =
    e instanceof ApiError
      ? e.status === 0
        ? e.message
        : `${e.message} (${e.code})`
      : 'Something went wrong. Reload the page.';
  return (
    <div class="error" role="alert">
      <p>{text}</p>
      {props.retry && (
        <button type="button" class="secondary" onClick={props.retry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function Empty(props: { children: ComponentChildren }) {
  return <p class="empty">{props.children}</p>;
}

export const when = (iso: string | null): string => (iso ? new Date(iso).toLocaleString() : '—');

/** An API failure as a form shows it: the message and its code. */
export const apiMessage = (e: unknown): string => (e instanceof ApiError ? `${e.message} (${e.code})` : String(e));

/** A form's error line (nothing while there is none). */
export function FormError(props: { text: string }) {
  return props.text ? (
    <p class="error" role="alert">
      {props.text}
    </p>
  ) : null;
}

/** A table's column headings; `action`: a last, unlabelled column for row buttons. */
export function ColumnHeads(props: { names: string[]; action?: boolean }) {
  return (
    <thead>
      <tr>
        {props.names.map((n) => (
          <th key={n} scope="col">
            {n}
          </th>
        ))}
        {props.action && (
          <th scope="col">
            <span class="sr-only">Action</span>
          </th>
        )}
      </tr>
    </thead>
  );
}

/** Previous (browser history) and next (`onNext`, shown while there is a next cursor) page buttons. */
export function Pager(props: { cursor: string; nextCursor: string | null; onNext: (cursor: string) => void }) {
  const next = props.nextCursor;
  return (
    <nav class="pager" aria-label="Pages">
      {props.cursor && (
        <button type="button" class="secondary" onClick={() => history.back()}>
          Previous page
        </button>
      )}
      {next && (
        <button type="button" class="secondary" onClick={() => props.onNext(next)}>
          Next page
        </button>
      )}
    </nav>
  );
}

/** GET `path` once on mount: `key`'s rows and the total; `load` fetches again. */
export function useListing<T>(path: string, key: string) {
  const [rows, setRows] = useState<T[] | null>(null);
  const [total, setTotal] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const load = () =>
    api<{ total: number; [key: string]: unknown }>('GET', path).then(
      (r) => {
        setRows(r[key] as T[]);
        setTotal(r.total);
        setError(null);
      },
      (e: unknown) => setError(e),
    );
  useEffect(() => {
    void load();
  }, []);
  return { rows, total, error, setError, load };
}

/** An audit event as GET /api/v1/audit lists it. */
export interface AuditEvent {
  seq: number;
  at: string;
  actor: string;
  action: string;
  subject: string | null;
  details: Record<string, unknown>;
}

/** A labelled text input in its own block; `onValue` gets what is typed. */
export function TextField(props: {
  id: string;
  label: string;
  value: string;
  onValue: (value: string) => void;
  name?: string;
  type?: 'text' | 'number';
  min?: number;
  max?: number;
  required?: boolean;
  autoComplete?: string;
}) {
  const { id, label, value, onValue, ...rest } = props;
  // The optional attributes as given (the union of input types in Preact's JSX cannot narrow them).
  const attrs = rest as InputHTMLAttributes<HTMLInputElement>;
  return (
    <div>
      <label for={id}>{label}</label>
      <input id={id} {...attrs} value={value} onInput={(e) => onValue((e.target as HTMLInputElement).value)} />
    </div>
  );
}

/** A table row's action button; `label` names it for screen readers (the row's subject in it). */
export function RowAction(props: { label: string; onClick: () => void; children: ComponentChildren }) {
  return (
    <button type="button" class="secondary" onClick={props.onClick} aria-label={props.label}>
      {props.children}
    </button>
  );
}
