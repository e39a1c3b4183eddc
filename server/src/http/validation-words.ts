/**
 * Schema validation errors in the user's words. Fastify's own text names the JSON path and the
 * regular expression (`body/deviceIds/0 must match pattern "^[A-Za-z0-9]..."`); an operator typed
 * a device id, so the answer names the id and the rule (issue 16 item 5).
 */

/** The identifier rule of the public contract (device ids, service and operator names, prefixes). */
const ID_RULE = /^\^\[A-Za-z0-9\]\[A-Za-z0-9\._-\]\{0,(\d+)\}\$$/;

const LABELS: Record<string, string> = {
  deviceIds: 'device id',
  deviceId: 'device id',
  id: 'device id',
  name: 'name',
  prefix: 'device id prefix',
};

interface AjvError {
  instancePath?: unknown;
  keyword?: unknown;
  params?: { pattern?: unknown };
}

/** What the request carried, by fastify's validation context. */
export interface ValidatedInput {
  body?: unknown;
  params?: unknown;
  querystring?: unknown;
}

function valueAt(root: unknown, pointer: string): unknown {
  let at: unknown = root;
  for (const part of pointer.split('/').slice(1)) {
    if (at === null || typeof at !== 'object') return undefined;
    at = (at as Record<string, unknown>)[part.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return at;
}

/**
 * The message for a validation failure: identifier rules in words (`device id "a b" is not valid:
 * letters, digits, '.', '_' and '-', 1 to 64, starting with a letter or digit`), anything else
 * as fastify put it.
 */
export function validationMessage(
  fallback: string,
  validation: unknown,
  context: string | undefined,
  input: ValidatedInput,
): string {
  if (!Array.isArray(validation)) return fallback;
  for (const e of validation as AjvError[]) {
    if (e?.keyword !== 'pattern' || typeof e.params?.pattern !== 'string' || typeof e.instancePath !== 'string')
      continue;
    const rule = ID_RULE.exec(e.params.pattern);
    if (!rule) continue;
    const field = e.instancePath
      .split('/')
      .filter((p) => p !== '' && !/^\d+$/.test(p))
      .pop();
    const label = (field && LABELS[field]) ?? field ?? 'value';
    const value = valueAt(input[context as keyof ValidatedInput], e.instancePath);
    const shown = typeof value === 'string' ? ` ${JSON.stringify(value)}` : '';
    return `${label}${shown} is not valid: letters, digits, '.', '_' and '-', 1 to ${Number(rule[1]) + 1}, starting with a letter or digit`;
  }
  return fallback;
}
