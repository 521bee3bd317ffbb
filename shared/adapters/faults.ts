import { dirname, sep } from 'node:path';
import { Backy2Error, ExitCode } from '../domain/errors.ts';

/**
 * Operating-system and SQLite errors turned into one line that names the path and what to do,
 * with a documented exit code (README, "Exit codes"). Adapters classify what they know (which path
 * is the data directory, the database, the source); the CLI classifies what still escapes.
 */

/** What the failing path is to the user: it decides the exit code and the advice. */
export type PathRole = 'data' | 'database' | 'source' | 'target' | 'file';

const ROLE: Record<PathRole, string> = {
  data: 'data directory',
  database: 'metadata database',
  source: 'source',
  target: 'restore target',
  file: 'file',
};

const FREE_SPACE: Record<PathRole, string> = {
  data: 'free space there (backy2 cleanup -f deletes unreferenced blocks) and run the command again',
  database: 'free space on its filesystem and run the command again',
  source: 'check the source device',
  target: 'free space there, or restore to a larger disk',
  file: 'free space there and run the command again',
};

/** The errno code (ENOSPC, …) of a Node.js system error, if it is one. */
export function errnoOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

const hasPath = (e: unknown): string | undefined => {
  const p = (e as { path?: unknown } | null)?.path;
  return typeof p === 'string' ? p : undefined;
};

/**
 * The Backy2Error for an operating-system error on `path` (or the error's own path), or null when
 * `e` is not one we know: a real bug then stays exit 100 with its stack under -d.
 */
export function osFault(e: unknown, role: PathRole, path?: string): Backy2Error | null {
  if (e instanceof Backy2Error) return e;
  const code = errnoOf(e);
  if (!code) return null;
  const where = `${ROLE[role]} ${path ?? hasPath(e) ?? '(unknown path)'}`;
  const deviceRole = role === 'source' || role === 'target';
  const exit = deviceRole ? ExitCode.device : ExitCode.storage;
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new Backy2Error(exit, `No space left on the ${where} (${code}): ${FREE_SPACE[role]}`);
    case 'EROFS':
      return new Backy2Error(exit, `The ${where} is on a read-only filesystem (EROFS): remount it read-write (mount -o remount,rw) or configure another path`);
    case 'EACCES':
    case 'EPERM':
      return new Backy2Error(
        deviceRole ? ExitCode.usage : ExitCode.storage,
        `Permission denied on the ${where} (${code}): check its owner and mode, or run backy2 as the user that owns it`,
      );
    case 'EIO':
    case 'ENXIO':
    case 'ESTALE':
      return new Backy2Error(
        exit,
        `I/O error on the ${where} (${code}): the disk or its connection is failing; check dmesg${role === 'source' ? ', fix or replace the device' : ', fix it and run the command again'}`,
      );
    case 'EMFILE':
    case 'ENFILE':
      return new Backy2Error(
        ExitCode.systemLimit,
        `Too many open files (${code}) at the ${where}: raise the limit (ulimit -n) or lower simultaneous_reads/simultaneous_writes`,
      );
    case 'ENOMEM':
      return new Backy2Error(ExitCode.systemLimit, `Out of memory (ENOMEM) at the ${where}: lower simultaneous_reads/simultaneous_writes or free memory`);
    case 'ENOENT':
    case 'ENOTDIR':
      return role === 'data' || role === 'database'
        ? new Backy2Error(ExitCode.storage, `The ${where} is missing (${code}): is its filesystem mounted? Check the config's paths`)
        : null;
    default:
      return null;
  }
}

/** SQLite result codes (the primary code, errcode & 0xff): https://sqlite.org/rescode.html */
const SQLITE = { PERM: 3, BUSY: 5, LOCKED: 6, NOMEM: 7, READONLY: 8, IOERR: 10, CORRUPT: 11, FULL: 13, CANTOPEN: 14, NOTADB: 26 } as const;

/** True for node:sqlite's errors (code ERR_SQLITE_ERROR, errcode = SQLite's result code). */
export const isSqliteError = (e: unknown): e is Error & { errcode: number; errstr?: string } =>
  (e as { code?: unknown } | null)?.code === 'ERR_SQLITE_ERROR' && typeof (e as { errcode?: unknown }).errcode === 'number';

export const isDatabaseDamage = (e: unknown): boolean =>
  (e instanceof Backy2Error && e.exitCode === ExitCode.damagedDatabase) ||
  (isSqliteError(e) && [SQLITE.CORRUPT, SQLITE.NOTADB].includes((e.errcode & 0xff) as 11 | 26));

/** What to do about a damaged database file, in one sentence. */
export const damagedDatabaseAdvice = (path: string) =>
  `backy2 writes nothing more to it. Keep a copy of it; sqlite3 ${path} "PRAGMA integrity_check" shows what is damaged; ` +
  `put back a copy of the file, or save what is readable with: sqlite3 ${path} .recover | sqlite3 NEW.sqlite and configure NEW.sqlite`;

export function damagedDatabase(path: string, what: string): Backy2Error {
  return new Backy2Error(ExitCode.damagedDatabase, `The metadata database ${path} is damaged (${what.replace(/\s+/g, ' ')}): ${damagedDatabaseAdvice(path)}`);
}

/** The Backy2Error for a node:sqlite error on the database at `path`, or null when `e` is not one. */
export function sqliteFault(e: unknown, path: string): Backy2Error | null {
  if (e instanceof Backy2Error) return e;
  if (!isSqliteError(e)) return null;
  const detail = e.errstr ?? e.message;
  switch (e.errcode & 0xff) {
    case SQLITE.CORRUPT:
    case SQLITE.NOTADB:
      return damagedDatabase(path, detail);
    case SQLITE.FULL:
      return new Backy2Error(ExitCode.storage, `No space left for the metadata database ${path} (${detail}): ${FREE_SPACE.database}`);
    case SQLITE.READONLY:
      return new Backy2Error(
        ExitCode.storage,
        `The metadata database ${path} cannot be written (${detail}): is its filesystem mounted read-only? Remount it read-write (mount -o remount,rw)`,
      );
    case SQLITE.IOERR:
      return new Backy2Error(
        ExitCode.storage,
        `I/O error on the metadata database ${path} (${detail}): check its disk (dmesg), free space and mount, then run the command again`,
      );
    case SQLITE.CANTOPEN:
    case SQLITE.PERM:
      return new Backy2Error(
        ExitCode.storage,
        `The metadata database ${path} cannot be opened (${detail}): check that its directory exists and is writable by this user, and that the open-files limit (ulimit -n) is not exhausted`,
      );
    case SQLITE.BUSY:
    case SQLITE.LOCKED:
      return new Backy2Error(
        ExitCode.locked,
        `The metadata database ${path} stayed locked by another process (${detail}): wait for the other backy2 command to finish and run this one again`,
      );
    case SQLITE.NOMEM:
      return new Backy2Error(ExitCode.systemLimit, `Out of memory in SQLite on ${path} (${detail})`);
    default:
      return null;
  }
}

/**
 * For an embedded repository: an error on its database or under its data directory, as one line
 * naming that path (`e` itself when it is neither).
 */
export function explainLocalFault(e: unknown, paths: { sqlitePath: string; dataPath: string }): unknown {
  if (e instanceof Backy2Error) return e;
  const sqlite = sqliteFault(e, paths.sqlitePath);
  if (sqlite) return sqlite;
  const path = (e as { path?: unknown } | null)?.path;
  if (typeof path !== 'string') return e;
  if (path.startsWith(paths.sqlitePath) || path === dirname(paths.sqlitePath)) return osFault(e, 'database', paths.sqlitePath) ?? e;
  if (path === paths.dataPath || path.startsWith(paths.dataPath + sep)) return osFault(e, 'data', paths.dataPath) ?? e;
  return e;
}

/** The CLI's last resort for an error no adapter classified: an errno or SQLite error, else null (a bug). */
export function classifyLastResort(e: unknown): Backy2Error | null {
  if (e instanceof Backy2Error) return e;
  return osFault(e, 'file') ?? (isSqliteError(e) ? sqliteFault(e, '(the metadata database)') : null) ?? workerLimit(e);
}

/**
 * Limits that reach us without an errno code: a codec worker thread that could not start
 * (ERR_WORKER_INIT_FAILED: EMFILE), or a module Node.js could not load because its package config
 * could not be opened ("Cannot read package config …: too many open files").
 */
function workerLimit(e: unknown): Backy2Error | null {
  const message = (e as Error | null)?.message ?? '';
  const cause = /\b(EMFILE|ENFILE|ENOMEM)\b/.exec(message)?.[1] ?? (/too many open files/i.test(message) ? 'EMFILE' : undefined);
  if (!cause) return null;
  if ((e as { code?: unknown } | null)?.code === 'ERR_WORKER_INIT_FAILED')
    return new Backy2Error(
      ExitCode.systemLimit,
      `A worker thread could not start (${cause}): raise the open-files limit (ulimit -n) or free memory, then run the command again`,
    );
  if (!/too many open files/i.test(message)) return null;
  return new Backy2Error(
    ExitCode.systemLimit,
    `Too many open files (${cause}) while loading backy2's own code: raise the open-files limit (ulimit -n), then run the command again`,
  );
}
