/**
 * `fleetgate serve` runs under OpenSSL settings that Node can only take at process start.
 *
 * OpenSSL reads its configuration once, before any JavaScript runs, and Node has no API for the
 * one setting that matters here: how many TLS 1.3 session tickets a server sends per handshake
 * (SSL_CTX_set_num_tickets; OpenSSL's default is two). With OpenSSL 3.0 every ticket after the
 * first duplicates the session, re-decoding the client certificate, so a second ticket that a
 * device never uses costs ~14% of the server CPU of a full mTLS handshake (measured here). So the
 * `serve` command starts itself again as a child with `--openssl-config=server/openssl/fleetgate.cnf`
 * (NumTickets = 1) and waits for it: same arguments, environment and stdio, signals passed on,
 * its exit code returned. Broker workers inherit the flag (node:cluster forks with execArgv).
 *
 * No relaunch when: FLEETGATE_TLS_TICKETS=2 (OpenSSL's default), OPENSSL_CONF is set (the
 * operator's own OpenSSL configuration wins; add NumTickets to it), or the process already has an
 * --openssl-config flag. The child runs in its own process group and gets each signal once, from
 * the launcher. If the launcher dies (even SIGKILL), the child sees its IPC channel close and
 * shuts down gracefully, so it never outlives the launcher.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

/** Set in the child's environment: this process is the relaunched server. */
export const RELAUNCHED_ENV = 'FLEETGATE_TLS_RELAUNCHED';

export const OPENSSL_CONFIG_FILE = fileURLToPath(new URL('../../openssl/fleetgate.cnf', import.meta.url));

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export interface RelaunchInput {
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  execArgv: readonly string[];
}

/** Whether `fleetgate <argv>` should run as a child under fleetgate's OpenSSL configuration. */
export function wantsRelaunch({ argv, env, execArgv }: RelaunchInput): boolean {
  if (argv[0] !== 'serve' || argv.includes('--help') || argv.includes('-h')) return false;
  if (env[RELAUNCHED_ENV] === '1') return false;
  // Anything but the default "1" (including a bad value) runs in place: config validation then
  // names a bad value in its one-line error.
  const tickets = env.FLEETGATE_TLS_TICKETS;
  if (tickets !== undefined && tickets !== '' && tickets !== '1') return false;
  if (env.OPENSSL_CONF) return false;
  if (execArgv.some((a) => a.startsWith('--openssl-config') || a === '--openssl-shared-config')) return false;
  return existsSync(OPENSSL_CONFIG_FILE);
}

/**
 * Runs `script argv` again under `--openssl-config` and resolves with its exit code (128 + signal
 * number when it died of a signal, as a shell reports it).
 */
export function relaunch(script: string, { argv, env, execArgv }: RelaunchInput): Promise<number> {
  const child = spawn(process.execPath, [...execArgv, `--openssl-config=${OPENSSL_CONFIG_FILE}`, script, ...argv], {
    env: { ...env, [RELAUNCHED_ENV]: '1' },
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    // Its own process group: Ctrl+C in a terminal signals the whole foreground group, and the
    // server would get SIGINT twice (from the terminal and from us), which it takes as "exit now".
    detached: true,
  });
  const forward = (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  for (const s of SIGNALS) process.on(s, forward);
  return new Promise((resolve) => {
    child.once('error', (e) => {
      process.stderr.write(`fleetgate: cannot start the server process: ${e.message}\n`);
      resolve(1);
    });
    child.once('exit', (code, signal) => {
      for (const s of SIGNALS) process.off(s, forward);
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}

/**
 * In the relaunched server: stop gracefully when the launcher goes away (its IPC channel closes),
 * without the channel keeping the process alive. `stop` is the same path as SIGTERM.
 */
export function followLauncher(stop: () => void): void {
  if (process.env[RELAUNCHED_ENV] !== '1' || !process.channel) return;
  process.channel.unref();
  process.once('disconnect', stop);
}
