export const DAY_MS = 86_400_000;
/** Backdating applied to notBefore so devices with slightly slow clocks accept new certificates. */
export const CLOCK_SKEW_MS = 5 * 60_000;

/** X.509 times carry whole seconds (RFC 5280 4.1.2.5.1/4.1.2.5.2: no fractional seconds). */
export function wholeSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}
