import { type ParseArgsConfig, parseArgs } from 'node:util';
import { UsageError } from './output.js';

/** What the CLI knows about a command before loading it (server/src/cli/commands.ts). */
export interface CommandSpec {
  /** Words that select the command, e.g. ['ca', 'export']. */
  path: string[];
  summary: string;
  /** Full help text shown by --help (usage line, options, environment, examples). */
  help: string;
  /** Imports the command's module only when it runs (`serve` alone loads the whole server). */
  load(): Promise<CommandImpl>;
}

/** A command's implementation, in its own module. */
export interface CommandImpl {
  run(argv: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;
type OptionValue<O> = O extends { type: 'string'; multiple: true }
  ? string[]
  : O extends { type: 'string' }
    ? string
    : O extends { type: 'boolean'; multiple: true }
      ? boolean[]
      : boolean;
export type ParsedOptions<T extends Options> = { [K in keyof T]?: OptionValue<T[K]> };

/** parseArgs in strict mode; unknown options and stray arguments become UsageErrors. */
export function parseCommandArgs<T extends Options>(
  argv: string[],
  options: T,
  opts: { positionals?: number } = {},
): { values: ParsedOptions<T>; positionals: string[] } {
  try {
    const parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: (opts.positionals ?? 0) > 0 });
    if (parsed.positionals.length > (opts.positionals ?? 0)) {
      throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[opts.positionals ?? 0])}`);
    }
    return { values: parsed.values as ParsedOptions<T>, positionals: parsed.positionals };
  } catch (e) {
    if (e instanceof UsageError) throw e;
    // Node's messages can run over several lines (hints for values starting with '-'): the CLI
    // promises one line.
    throw new UsageError((e as Error).message.split('\n')[0] ?? 'bad arguments');
  }
}
