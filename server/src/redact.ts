/** A URL without its password, for banners, logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/**
 * A URL-like text with anything before an '@' in its authority masked, parseable or not: for
 * error messages about a value that may be broken and still carry a password.
 */
export function redactUserinfo(text: string): string {
  return text.replace(/\/\/[^/?#]*@/, '//***@');
}
