/**
 * Paged lists for the CLI: `--limit N` (one page of N, 1-1000, default 100) or `--all` (follows
 * the server's nextCursor until the last page), and a footer that says what was left out. The
 * server side of the protocol is documented with the operator API (README, /docs).
 */
import type { ApiClient } from './api-client.js';
import { UsageError } from './output.js';

export const DEFAULT_PAGE = 100;
export const MAX_PAGE = 1000;

/** The options every list command takes, for parseCommandArgs. */
export const PAGE_OPTIONS = {
  limit: { type: 'string' },
  all: { type: 'boolean' },
} as const;

export interface PageArgs {
  limit: number;
  all: boolean;
}

export function parsePageArgs(values: { limit?: string | undefined; all?: boolean | undefined }): PageArgs {
  if (values.all && values.limit !== undefined) throw new UsageError('give --all or --limit, not both');
  const limit = values.limit ?? String(DEFAULT_PAGE);
  if (!/^\d{1,4}$/.test(limit) || Number(limit) < 1 || Number(limit) > MAX_PAGE) {
    throw new UsageError(`--limit must be a whole number from 1 to ${MAX_PAGE}`);
  }
  return { limit: Number(limit), all: values.all === true };
}

export interface Listed<T> {
  items: T[];
  total: number;
  nextCursor: string | null;
}

/**
 * GETs `path` with `query` plus limit/cursor; with --all, page after page of MAX_PAGE until the
 * server says there is no next page. `key` names the array in the answer (devices, tokens, ...).
 */
export async function fetchList<T>(
  api: ApiClient,
  path: string,
  query: URLSearchParams,
  key: string,
  args: PageArgs,
): Promise<Listed<T>> {
  const items: T[] = [];
  let cursor: string | null = null;
  for (;;) {
    const q = new URLSearchParams(query);
    q.set('limit', String(args.all ? MAX_PAGE : args.limit));
    if (cursor !== null) q.set('cursor', cursor);
    const page = await api.call<Record<string, unknown> & { total: number; nextCursor: string | null }>(
      'GET',
      `${path}?${q}`,
    );
    items.push(...((page[key] as T[] | undefined) ?? []));
    if (!args.all || page.nextCursor === null) return { items, total: page.total, nextCursor: page.nextCursor };
    cursor = page.nextCursor;
  }
}

/**
 * What the table left out, for stderr: "showing 100 of 312 devices; use --all or --limit", or
 * "312 devices" when everything is shown.
 */
export function listFooter(shown: number, total: number, noun: string): string {
  if (shown >= total) return `${total} ${noun}`;
  return `showing ${shown} of ${total} ${noun}; use --all or --limit`;
}
