import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { OPENSSL_CONFIG_FILE, RELAUNCHED_ENV, wantsRelaunch } from '../../server/src/cli/tls-relaunch.js';

const base = { argv: ['serve'], env: {}, execArgv: [] as string[] };

describe('serve relaunch under fleetgate OpenSSL settings', () => {
  it('ships the config file Node reads (nodejs_conf) with NumTickets = 1', () => {
    expect(existsSync(OPENSSL_CONFIG_FILE)).toBe(true);
    const text = readFileSync(OPENSSL_CONFIG_FILE, 'utf8');
    expect(text).toMatch(/^nodejs_conf = /m);
    expect(text).toMatch(/^NumTickets = 1$/m);
  });

  it('relaunches `serve` by default', () => {
    expect(wantsRelaunch(base)).toBe(true);
    expect(wantsRelaunch({ ...base, argv: ['serve', '--workers', '2'] })).toBe(true);
    expect(wantsRelaunch({ ...base, env: { FLEETGATE_TLS_TICKETS: '1' } })).toBe(true);
  });

  it.each([
    ['another command', { argv: ['token', 'create'] }],
    ['no command', { argv: [] }],
    ['serve --help', { argv: ['serve', '--help'] }],
    ['serve -h', { argv: ['serve', '-h'] }],
    ['the relaunched child', { env: { [RELAUNCHED_ENV]: '1' } }],
    ["OpenSSL's default asked for", { env: { FLEETGATE_TLS_TICKETS: '2' } }],
    ['a bad FLEETGATE_TLS_TICKETS (config validation reports it)', { env: { FLEETGATE_TLS_TICKETS: 'many' } }],
    ["the operator's own OPENSSL_CONF", { env: { OPENSSL_CONF: '/etc/ssl/custom.cnf' } }],
    ['an --openssl-config flag already given', { execArgv: ['--openssl-config=/x.cnf'] }],
    ['--openssl-shared-config', { execArgv: ['--openssl-shared-config'] }],
  ])('runs in place for %s', (_what, over) => {
    expect(wantsRelaunch({ ...base, ...over })).toBe(false);
  });
});
