/**
 * The settings documentation produced from CONFIG_SCHEMA: the `Environment:` block of
 * `serve --help` and the README's settings tables (between `<!-- config:SECTION -->` markers,
 * rewritten by `node scripts/config-docs.mjs --write`). One schema, so the three cannot drift.
 */
import { CONFIG_SCHEMA, type ConfigSection, type Setting } from './config.js';

const SETTINGS = Object.values(CONFIG_SCHEMA) as Setting<unknown>[];

/** One line per variable: name, what it sets, its default. */
export function renderEnvHelp(): string {
  return SETTINGS.map((s) => `  ${s.env.padEnd(30)} ${s.help} (default ${s.defaultText})`).join('\n');
}

/** The default as a README cell: a literal value in a code span, a description as it is. */
function readmeDefault(s: Setting<unknown>): string {
  if (s.readme?.default !== undefined) return s.readme.default;
  return s.defaultText.startsWith('(') || s.defaultText.includes(' ') ? s.defaultText : `\`${s.defaultText}\``;
}

/** Rows the README adds after a section's variables (pointers to the other tables). */
const TRAILING_ROWS: Record<ConfigSection, string[][]> = {
  general: [
    [
      '`FLEETGATE_MQTT_*`',
      'see [Broker](#broker-mqtt-over-mtls)',
      'broker limits, ACL, ticket keys, revocation freshness',
    ],
  ],
  mqtt: [],
};

/** The markdown table of one section, columns padded so the source reads as a table too. */
export function renderReadmeTable(section: ConfigSection): string {
  const rows = [
    ...SETTINGS.filter((s) => s.section === section).map((s) => [
      `\`${s.env}\``,
      readmeDefault(s),
      s.readme?.help ?? s.help,
    ]),
    ...TRAILING_ROWS[section],
  ];
  const header = ['variable', 'default', 'meaning'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  return [line(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

export const CONFIG_SECTIONS: readonly ConfigSection[] = ['general', 'mqtt'];

/**
 * The README with each `<!-- config:SECTION -->` ... `<!-- /config:SECTION -->` block replaced by
 * that section's table. Throws when a marker pair is missing, so a moved heading cannot silently
 * drop a table.
 */
export function updateReadme(readme: string): string {
  let out = readme;
  for (const section of CONFIG_SECTIONS) {
    const open = `<!-- config:${section} -->`;
    const close = `<!-- /config:${section} -->`;
    const start = out.indexOf(open);
    const end = out.indexOf(close);
    if (start < 0 || end < start) throw new Error(`README: missing ${open} ... ${close}`);
    out = `${out.slice(0, start + open.length)}\n${renderReadmeTable(section)}\n${out.slice(end)}`;
  }
  return out;
}
