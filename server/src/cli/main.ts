/**
 * `fleetgate` command line. Each command's words, summary and help live in commands.ts and its
 * implementation in its own module, imported only when it runs; this file only routes words to
 * commands, prints help and turns errors into one line on stderr plus an exit code.
 */
import { isFleetgateError } from '../errors.js';
import type { CommandSpec } from './command.js';
import { COMMANDS } from './commands.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, err, out, UsageError } from './output.js';

export { COMMANDS };

function overview(): string {
  const width = Math.max(...COMMANDS.map((c) => c.path.join(' ').length));
  const lines = COMMANDS.map((c) => `  ${c.path.join(' ').padEnd(width)}   ${c.summary}`);
  return `Usage: fleetgate <command> [options]

fleetgate: identity and access for IoT fleets (private CA, EST enrollment, revocation, mTLS MQTT).

Commands:
${lines.join('\n')}

Run 'fleetgate <command> --help' for a command's options ('serve --help' lists the environment).

Commands other than serve and ca export talk to the server's API: locally they find it, the admin
token and the CA in the data dir (FLEETGATE_DATA_DIR, default ./.fleetgate); for another server set
FLEETGATE_URL (https) and FLEETGATE_TOKEN, and FLEETGATE_CA_FILE to pin its CA (otherwise the
system trust store is used).
`;
}

/** Finds the command with the longest matching path; returns it and the remaining arguments. */
function resolve(argv: string[]): { command: CommandSpec | undefined; rest: string[]; prefix: string[] } {
  let best: CommandSpec | undefined;
  for (const c of COMMANDS) {
    if (c.path.every((w, i) => argv[i] === w) && (!best || c.path.length > best.path.length)) best = c;
  }
  if (best) return { command: best, rest: argv.slice(best.path.length), prefix: best.path };
  // A group word alone ("fleetgate ca") lists its subcommands.
  return { command: undefined, rest: argv, prefix: argv.slice(0, 1) };
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    out(overview());
    return argv.length === 0 ? EXIT_USAGE : EXIT_OK;
  }
  if (argv[0] === '--version' || argv[0] === '-v') {
    out('fleetgate 0.1.0');
    return EXIT_OK;
  }
  const { command, rest, prefix } = resolve(argv);
  if (!command) {
    const group = COMMANDS.filter((c) => c.path[0] === prefix[0] && c.path.length > 1);
    if (group.length > 0 && (argv[1] === '--help' || argv[1] === '-h')) {
      // `fleetgate token --help`: the group's commands, as the overview lists them.
      const width = Math.max(...group.map((c) => c.path.join(' ').length));
      out(`Usage: fleetgate ${prefix[0]} <command> [options]

Commands:
${group.map((c) => `  ${c.path.join(' ').padEnd(width)}   ${c.summary}`).join('\n')}

Run 'fleetgate ${prefix[0]} <command> --help' for a command's options.
`);
      return EXIT_OK;
    }
    if (group.length > 0) {
      err(`fleetgate ${prefix[0]}: choose one of: ${group.map((c) => c.path.slice(1).join(' ')).join(', ')}`);
    } else {
      err(`fleetgate: unknown command ${JSON.stringify(argv[0])}; run 'fleetgate --help'`);
    }
    return EXIT_USAGE;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    out(command.help);
    return EXIT_OK;
  }
  try {
    return await (await command.load()).run(rest);
  } catch (e) {
    const name = `fleetgate ${command.path.join(' ')}`;
    if (e instanceof UsageError) {
      err(`${name}: ${e.message}; see '${name} --help'`);
      return EXIT_USAGE;
    }
    if (isFleetgateError(e)) {
      err(`${name}: ${e.message} [${e.code}]`);
      return EXIT_FAILURE;
    }
    err(`${name}: unexpected error: ${(e as Error)?.stack ?? String(e)}`);
    return EXIT_FAILURE;
  }
}
