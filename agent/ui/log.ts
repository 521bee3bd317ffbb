/**
 * Human output goes to stderr in backy2's "    INFO: …" shape; results (tables, uids, JSON)
 * go to stdout. With -m only errors reach the console, as backy2.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export class Log {
  private readonly min: Level;
  constructor(min: Level) {
    this.min = min;
  }
  private write(level: Level, label: string, message: string): void {
    if (ORDER[level] < ORDER[this.min]) return;
    process.stderr.write(`${label.padStart(9)}: ${message}\n`);
  }
  /** Debug lines carry the seconds since the process started: `-d` shows where a command's time goes. */
  debug = (m: string) => this.write('debug', 'DEBUG', `[+${(performance.now() / 1000).toFixed(3)} s] ${m}`);
  info = (m: string) => this.write('info', 'INFO', m);
  warn = (m: string) => this.write('warn', 'WARNING', m);
  error = (m: string) => this.write('error', 'ERROR', m);
  get level(): Level {
    return this.min;
  }
}
