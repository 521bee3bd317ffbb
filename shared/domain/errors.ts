/**
 * Every failure a user can see carries an exit code from one table (README, "Exit codes"),
 * so cron scripts written for backy2 keep working.
 */
export const ExitCode = {
  ok: 0,
  usage: 1, // usage, config, target exists, bad date, repository not initialised
  notFound: 3, // unknown or ambiguous version uid
  refused: 4, // protected, too young, already in that state, late commit
  sourceMismatch: 5, // hints or the source contradict what backup expected (e.g. it shrank)
  storage: 6, // a block or manifest cannot be read or written
  integrity: 7, // wrong key or a block that fails verification during restore
  locked: 8, // another process holds the lock
  cloud: 9, // stack missing, outputs missing, credentials (also expired), endpoint unreachable, throttled after retries
  device: 10, // the source or restore target failed: I/O error reading the source, full/failing/read-only target
  damagedDatabase: 11, // the SQLite metadata database is damaged (corrupt page, truncated, not a database)
  systemLimit: 12, // out of file descriptors or memory (EMFILE, ENFILE, ENOMEM)
  scrubErrors: 20,
  slaBreach: 21, // sla found a breach (backy2 exited 0; monitoring wants to know)
  importExists: 22,
  importFormat: 23,
  listen: 24, // nbd: the address cannot be bound (port in use, no such address, no permission)
  recoverNotEmpty: 25, // recover: the metadata store already holds versions (use --merge)
  recoverIncomplete: 26, // recover: journal entries refused or blocks missing; the rest was recovered
  unexpected: 100,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export class Backy2Error extends Error {
  readonly exitCode: ExitCode;
  constructor(exitCode: ExitCode, message: string) {
    super(message);
    this.name = 'Backy2Error';
    this.exitCode = exitCode;
  }
}

export const usageError = (m: string) => new Backy2Error(ExitCode.usage, m);
export const notFound = (m: string) => new Backy2Error(ExitCode.notFound, m);
export const refused = (m: string) => new Backy2Error(ExitCode.refused, m);
export const storageError = (m: string) => new Backy2Error(ExitCode.storage, m);
export const integrityError = (m: string) => new Backy2Error(ExitCode.integrity, m);
export const deviceError = (m: string) => new Backy2Error(ExitCode.device, m);
