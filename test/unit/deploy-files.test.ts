/**
 * docker-compose.yml and the Dockerfile cannot be run here (no Docker engine), so this keeps them
 * honest: every script they run exists, every variable they set is one fleetgate reads, every
 * option they pass is one the command accepts, and docker-compose itself accepts the file.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { COMMANDS } from '../../server/src/cli/main.js';
import { CONFIG_VARIABLES } from '../../server/src/config.js';
import { REPO_ROOT } from '../helpers/cli.js';
import { requireTool } from '../helpers/system-tools.js';

interface Service {
  build?: string;
  image?: string;
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
}

const compose = parse(readFileSync(path.join(REPO_ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const dockerfile = readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
const fleetgateServices = Object.entries(compose.services).filter(([, s]) => s.build === '.');

/** Variables the server reads (config.ts) plus those the CLI and simulator read to find a server. */
const KNOWN_VARIABLES = new Set([
  ...CONFIG_VARIABLES.map((v) => v.name),
  'FLEETGATE_URL',
  'FLEETGATE_TOKEN',
  'FLEETGATE_CA_FILE',
]);

/** Every "node <script> [args...]" in a command line, with its arguments. */
function nodeInvocations(text: string): { script: string; args: string[] }[] {
  const found: { script: string; args: string[] }[] = [];
  for (const m of text.matchAll(/\bnode\s+(\S+\.js)((?:\s+(?!&&|\|\|)[^\s;&|]+)*)/g)) {
    found.push({ script: m[1] ?? '', args: (m[2] ?? '').trim().split(/\s+/).filter(Boolean) });
  }
  return found;
}

function commandText(s: Service): string {
  return [s.entrypoint, s.command, s.healthcheck?.test]
    .flat()
    .filter((x): x is string => typeof x === 'string')
    .join(' ');
}

describe('docker-compose.yml', () => {
  it('has the documented topology: PostgreSQL, Redis, two fleetgate nodes, a simulated fleet', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['fleet', 'fleetgate-1', 'fleetgate-2', 'postgres', 'redis']);
    for (const name of ['fleetgate-1', 'fleetgate-2']) {
      const s = compose.services[name] as Service;
      expect(s.healthcheck?.test.join(' ')).toContain('server/bin/fleetgate.js health');
      expect(s.volumes?.some((v) => v.endsWith(':/data'))).toBe(true);
      // Both nodes load the same CA files.
      expect(s.volumes).toContain('ca:/data/ca');
      expect(s.environment?.DATABASE_URL).toMatch(/^postgres:\/\/.+@postgres:5432\//);
      expect(s.environment?.REDIS_URL).toBe('redis://redis:6379');
    }
    for (const volume of Object.values(compose.services).flatMap((s) => s.volumes ?? [])) {
      const named = volume.split(':')[0] ?? '';
      expect(compose.volumes, `volume ${named}`).toHaveProperty([named]);
    }
  });

  it('sets only variables fleetgate reads', () => {
    for (const [name, s] of fleetgateServices) {
      for (const variable of Object.keys(s.environment ?? {})) {
        expect(KNOWN_VARIABLES.has(variable), `${name}: ${variable}`).toBe(true);
      }
    }
  });

  it('runs scripts that exist with commands and options they accept', () => {
    const commandPaths = new Set(COMMANDS.map((c) => c.path.join(' ')));
    const simHelp = spawnSync(process.execPath, [path.join(REPO_ROOT, 'firmware-sim/bin/fleetgate-sim.js'), '--help'], {
      encoding: 'utf8',
    }).stdout;
    const texts = [...fleetgateServices.map(([, s]) => commandText(s)), dockerfile];
    const invocations = texts.flatMap(nodeInvocations);
    expect(invocations.length).toBeGreaterThanOrEqual(3);
    for (const { script, args } of invocations) {
      expect(existsSync(path.join(REPO_ROOT, script)), script).toBe(true);
      if (script === 'server/bin/fleetgate.js') {
        expect(commandPaths.has(args[0] ?? ''), `fleetgate ${args[0]}`).toBe(true);
      }
      if (script === 'firmware-sim/bin/fleetgate-sim.js') {
        for (const option of args.filter((a) => a.startsWith('--'))) expect(simHelp, option).toContain(option);
      }
    }
    // A JSON-form CMD/HEALTHCHECK in the Dockerfile names the same scripts.
    for (const m of dockerfile.matchAll(/\["node", "([^"]+)", "([^"]+)"\]/g)) {
      expect(existsSync(path.join(REPO_ROOT, m[1] ?? ''))).toBe(true);
      expect(commandPaths.has(m[2] ?? '')).toBe(true);
    }
  });

  it('is accepted by docker-compose', () => {
    if (!requireTool('docker-compose')) return;
    const r = spawnSync('docker-compose', ['-f', 'docker-compose.yml', 'config', '-q'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
  });
});

describe('Dockerfile', () => {
  it('copies paths that exist and sets the same env contract', () => {
    for (const m of dockerfile.matchAll(/^COPY\s+(.+)\s+\S+$/gm)) {
      for (const source of (m[1] ?? '').split(/\s+/)) {
        expect(existsSync(path.join(REPO_ROOT, source)), source).toBe(true);
      }
    }
    for (const m of dockerfile.matchAll(/\b(FLEETGATE_[A-Z_]+)=/g)) {
      expect(KNOWN_VARIABLES.has(m[1] ?? ''), m[1]).toBe(true);
    }
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toContain('EXPOSE 8443 8883');
  });
});
