import type { ComponentChildren } from 'preact';
import { ApiError } from './api.js';

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
