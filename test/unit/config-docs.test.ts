/**
 * The configuration schema (server/src/config.ts) is the one place a setting is declared: this
 * file proves `serve --help` and the README's settings tables are produced from it and current,
 * and that each documented default is the value loadConfig really uses.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_SCHEMA, loadConfig, type Setting } from '../../server/src/config.js';
import { renderReadmeTable, updateReadme } from '../../server/src/config-docs.js';
import { REPO_ROOT, runCli } from '../helpers/cli.js';

const SETTINGS = Object.values(CONFIG_SCHEMA) as Setting<unknown>[];
const README = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');

describe('configuration schema', () => {
  it('declares each variable once', () => {
    const names = SETTINGS.map((s) => s.env);
    expect(new Set(names).size).toBe(names.length);
  });

  it('documents literal defaults that parse to the value loadConfig uses', () => {
    // A default written as a value (not "(unset: ...)" or "number of cores") must be what the
    // parser makes of that text: the docs cannot claim 24h while the code uses 12h.
    const literal = SETTINGS.filter((s) => typeof s.default !== 'function' && s.default !== undefined);
    expect(literal.length).toBeGreaterThan(30);
    for (const s of literal) {
      expect(s.parse(s.defaultText, { name: s.env, cwd: '/' }), s.env).toEqual(s.default);
    }
  });

  it('gives loadConfig({}) the schema defaults', () => {
    const c = loadConfig({}, '/srv/app');
    expect(c.apiPort).toBe(CONFIG_SCHEMA.apiPort.default);
    expect(c.mqtt.presenceFlushMs).toBe(CONFIG_SCHEMA.mqttPresenceFlushMs.default);
    expect(c.dataDir).toBe(path.resolve('/srv/app', CONFIG_SCHEMA.dataDir.defaultText));
  });
});

describe('README settings tables', () => {
  it('are the tables the schema produces (run `node scripts/config-docs.mjs --write` when this fails)', () => {
    expect(updateReadme(README)).toBe(README);
  });

  it('list every variable of the schema in its section', () => {
    for (const s of SETTINGS) {
      const table = renderReadmeTable(s.section);
      expect(table, s.env).toContain(`| \`${s.env}\``);
      expect(README, s.env).toContain(`| \`${s.env}\``);
    }
  });

  it('are found stale when a row differs, and a missing marker is an error', () => {
    const edited = README.replace(/\| `FLEETGATE_TOKEN_TTL` +\| `24h`/, '| `FLEETGATE_TOKEN_TTL` | `12h`');
    expect(edited).not.toBe(README);
    expect(updateReadme(edited)).toBe(README);
    expect(() => updateReadme(README.replace('<!-- /config:mqtt -->', ''))).toThrow(/config:mqtt/);
  });
});

describe('serve --help', () => {
  it('lists exactly the schema variables with their help and defaults', async () => {
    const r = await runCli(['serve', '--help']);
    expect(r.code).toBe(0);
    const section = r.stdout.slice(r.stdout.indexOf('Environment:\n'));
    const listed = [...section.matchAll(/^ {2}([A-Z][A-Z0-9_]+) +(.*)$/gm)].map((m) => ({ name: m[1], rest: m[2] }));
    expect(listed.map((l) => l.name)).toEqual(SETTINGS.map((s) => s.env));
    for (const [i, s] of SETTINGS.entries()) {
      expect(listed[i]?.rest).toBe(`${s.help} (default ${s.defaultText})`);
    }
  });
});
