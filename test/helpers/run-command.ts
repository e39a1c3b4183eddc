/**
 * Runs any command (npm, node, a shell script, python) in a child process and collects its output,
 * for the tests of the packaged device client and of examples/. Unlike runBin the environment is
 * exactly the one given (these tests model a device, not this repository's CLI).
 */
import { spawn } from 'node:child_process';
import { type CliResult, collectOutput } from './cli.js';

export interface CommandOptions {
  cwd: string;
  env: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

export function runCommand(command: string, args: string[], opts: CommandOptions): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const child = spawn(command, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
  return collectOutput(child, `${command} ${args.join(' ')}`, timeoutMs);
}

/**
 * Runs a command to its end with stdout and stderr merged as they come; a hang is a failure: it
 * is killed after `timeoutMs` and resolves with code null.
 */
export function runToEnd(
  cmd: string,
  args: string[],
  timeoutMs = 20_000,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** The ```lang blocks of a Markdown text, in order. */
export function codeBlocks(markdown: string, lang: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`^\`\`\`${lang}\\n([\\s\\S]*?)^\`\`\`$`, 'gm');
  for (let m = re.exec(markdown); m; m = re.exec(markdown)) out.push(m[1] ?? '');
  return out;
}
