/**
 * Progress on stderr for long runs: a redrawn bar on a terminal, a plain line every few seconds
 * otherwise (CI logs, tests). One timer, whatever the fleet size.
 */
export class Progress {
  private timer: NodeJS.Timeout | undefined;
  private label = '';
  private total = 0;
  private count: () => number = () => 0;
  private extra: () => string = () => '';
  private started = 0;
  private readonly tty: boolean;

  constructor(private readonly enabled: boolean) {
    this.tty = Boolean(process.stderr.isTTY);
  }

  start(label: string, total: number, count: () => number, extra: () => string = () => ''): void {
    this.stop();
    if (!this.enabled) return;
    this.label = label;
    this.total = total;
    this.count = count;
    this.extra = extra;
    this.started = Date.now();
    this.timer = setInterval(() => this.draw(false), this.tty ? 200 : 5_000);
    this.timer.unref();
  }

  stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.draw(true);
  }

  /** A one-off line (phase results), kept apart from the bar. */
  note(line: string): void {
    if (!this.enabled) return;
    if (this.tty && this.timer) process.stderr.write('\r\x1b[2K');
    process.stderr.write(`${line}\n`);
  }

  private draw(final: boolean): void {
    const n = this.count();
    const secs = ((Date.now() - this.started) / 1000).toFixed(1);
    const extra = this.extra();
    const tail = `${n}/${this.total}  ${secs}s${extra ? `  ${extra}` : ''}`;
    if (this.tty) {
      const width = 30;
      const filled = this.total > 0 ? Math.round((Math.min(n, this.total) / this.total) * width) : width;
      const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
      process.stderr.write(`\r\x1b[2K${this.label} ${bar} ${tail}${final ? '\n' : ''}`);
    } else {
      process.stderr.write(`${this.label}: ${tail}\n`);
    }
  }
}
