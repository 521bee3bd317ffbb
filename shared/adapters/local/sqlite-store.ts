import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { hostname as hostName } from 'node:os';
import { parseEvent, streams, type DomainEvent, type EventOf, type VersionEvent } from '../../domain/events.ts';
import { evolveVersion } from '../../domain/version.ts';
import type { BlockId, BlockIndexEntry, StoredBlock, Version } from '../../domain/types.ts';
import { changesOf, touchAttempts, vouchesForUploads, type BlockIndexChange, type TouchResult } from '../../domain/block-index.ts';
import { ConcurrencyError, type MetadataStore, type StoredChunk } from '../../ports/metadata-store.ts';
import { blockIndexStatements } from './block-index-sql.ts';
import { Backy2Error, ExitCode, usageError } from '../../domain/errors.ts';
import type { VersionLease } from '../../domain/cleanup.ts';
import { damagedDatabase, isDatabaseDamage, osFault, sqliteFault } from '../faults.ts';
import { processAlive } from './processes.ts';

const SCHEMA_VERSION = '1';

const EVENT_LOG = `
CREATE TABLE events (
  pos INTEGER PRIMARY KEY AUTOINCREMENT,
  stream TEXT NOT NULL,
  stream_seq INTEGER NOT NULL,
  type TEXT NOT NULL,
  data TEXT NOT NULL,
  UNIQUE (stream, stream_seq)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE locks (name TEXT PRIMARY KEY, holder TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, at TEXT NOT NULL);
`;

/** Projections: derived from the event log, droppable and rebuilt by `rebuildProjections`. */
const PROJECTIONS = `
CREATE TABLE versions (uid TEXT PRIMARY KEY, name TEXT NOT NULL, date TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE map_chunks (uid TEXT NOT NULL, chunk INTEGER NOT NULL, entries BLOB, same_uid TEXT, same_chunk INTEGER, PRIMARY KEY (uid, chunk));
CREATE TABLE blocks (
  id TEXT PRIMARY KEY, stored_size INTEGER NOT NULL, checksum TEXT NOT NULL, created_at TEXT NOT NULL,
  unreferenced_since TEXT, deleting INTEGER NOT NULL DEFAULT 0, valid INTEGER NOT NULL DEFAULT 1
);
`;
const PROJECTION_TABLES = ['versions', 'map_chunks', 'blocks'];

/** The embedded metadata store: one SQLite file holding the event log and its projections. */
export class SqliteMetadataStore implements MetadataStore {
  readonly db: DatabaseSync;
  /** Prepared once; SQLite re-prepares them itself after rebuildProjections recreates the table. */
  private readonly blockIndexWrites = new Map<string, StatementSync>();
  readonly path: string;

  private constructor(db: DatabaseSync, path: string) {
    this.db = db;
    this.path = path;
  }

  static exists(path: string): boolean {
    if (!existsSync(path)) return false;
    // Another process may be writing (or checkpointing) at this moment: wait as every other open does.
    const db = guardedDatabase(path);
    try {
      return db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'events'").get() !== undefined;
    } finally {
      db.close();
    }
  }

  /** Creates a new repository database; refuses if one exists (backy2's initdb never destroys data). */
  static init(path: string): SqliteMetadataStore {
    if (SqliteMetadataStore.exists(path)) throw usageError(`Database ${path} already initialised; refusing to touch it`);
    try {
      mkdirSync(dirname(path), { recursive: true });
    } catch (e) {
      throw osFault(e, 'database', dirname(path)) ?? e;
    }
    const store = new SqliteMetadataStore(open(path), path);
    store.db.exec('BEGIN IMMEDIATE');
    store.db.exec(EVENT_LOG + PROJECTIONS);
    store.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('schema_version', SCHEMA_VERSION);
    store.db.exec('COMMIT');
    return store;
  }

  static open(path: string): SqliteMetadataStore {
    if (!SqliteMetadataStore.exists(path)) throw usageError(`No backy2 database at ${path}; run "backy2 initdb" first`);
    return new SqliteMetadataStore(open(path), path);
  }

  close(): void {
    this.db.close();
  }

  /** Runs `fn` in one write transaction; SQLite serialises writers across processes. */
  transaction<T>(fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      this.db.exec('COMMIT');
      return result;
    } catch (e) {
      // SQLite may have rolled back by itself (SQLITE_FULL, SQLITE_IOERR, …): a ROLLBACK then fails
      // with "no transaction is active" and would hide the error that ended the transaction.
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw e;
    }
  }

  private append(stream: string, streamSeq: number, event: DomainEvent): boolean {
    const r = this.db
      .prepare('INSERT OR IGNORE INTO events (stream, stream_seq, type, data) VALUES (?, ?, ?, ?)')
      .run(stream, streamSeq, event.type, JSON.stringify(event));
    return r.changes === 1;
  }

  private logBlockIndexEvent(event: DomainEvent): void {
    const last = this.db.prepare('SELECT MAX(stream_seq) AS s FROM events WHERE stream = ?').get(streams.blockIndex) as { s: number | null };
    this.append(streams.blockIndex, (last.s ?? 0) + 1, event);
  }

  private appendToBlockIndex(event: DomainEvent): void {
    this.logBlockIndexEvent(event);
    this.apply(event);
  }

  /** Applies block-index changes, one conditional statement each (block-index-sql.ts); says which applied. */
  private applyChanges(changes: BlockIndexChange[]): boolean[] {
    return changes.map((change) => {
      const { sql, params } = blockIndexStatements[change.kind];
      const statement = this.blockIndexWrites.get(change.kind) ?? this.db.prepare(sql);
      this.blockIndexWrites.set(change.kind, statement);
      return statement.run(params(change)).changes === 1;
    });
  }

  async appendVersionEvents(expectedSeq: number, events: VersionEvent[], next: Version): Promise<void> {
    this.transaction(() => {
      const current = this.db.prepare('SELECT seq FROM versions WHERE uid = ?').get(next.uid) as { seq: number } | undefined;
      if ((current?.seq ?? 0) !== expectedSeq) throw new ConcurrencyError(`version ${next.uid} changed concurrently`);
      let seq = expectedSeq;
      for (const event of events) {
        if (!this.append(streams.version(next.uid), ++seq, event)) throw new ConcurrencyError(`version ${next.uid} changed concurrently`);
        this.apply(event);
      }
    });
  }

  async recordChunk(event: EventOf<'BlocksRecorded'>): Promise<boolean> {
    return this.transaction(() => {
      if (!this.append(streams.blockRecords(event.uid), event.chunk, event)) return false;
      this.apply(event);
      return true;
    });
  }

  async markUnreferenced(ids: BlockId[], at: string): Promise<void> {
    if (ids.length) this.transaction(() => this.appendToBlockIndex({ type: 'BlocksMarkedUnreferenced', v: 1, ids, at }));
  }

  async unmark(ids: BlockId[], at: string): Promise<void> {
    if (ids.length) this.transaction(() => this.appendToBlockIndex({ type: 'BlocksReferenced', v: 1, ids, created: [], at }));
  }

  async claimForDeletion(marks: { id: BlockId; markedAt: string }[], at: string): Promise<BlockId[]> {
    return this.transaction(() => {
      const applied = this.applyChanges(marks.map((m): BlockIndexChange => ({ kind: 'claimed', id: m.id, markedAt: m.markedAt })));
      const ids = marks.filter((_, i) => applied[i]).map((m) => m.id);
      if (ids.length) this.logBlockIndexEvent({ type: 'BlocksDeletionClaimed', v: 1, ids, at });
      return ids;
    });
  }

  async removeBlocks(ids: BlockId[], at: string): Promise<void> {
    if (ids.length) this.transaction(() => this.appendToBlockIndex({ type: 'BlocksDeleted', v: 1, ids, at }));
  }

  async rekeyBlocks(blocks: StoredBlock[], at: string): Promise<void> {
    if (blocks.length) this.transaction(() => this.appendToBlockIndex({ type: 'BlocksRekeyed', v: 1, blocks, at }));
  }

  async touchBlocks(blocks: StoredBlock[], at: string): Promise<Map<BlockId, TouchResult>> {
    return this.transaction(() => {
      const results = new Map<BlockId, TouchResult>();
      for (const b of blocks) {
        const found = touchAttempts(b, at).find((attempt) => this.applyChanges([attempt.change])[0]);
        results.set(b.id, found?.finds ?? 'deleting');
      }
      const ids = blocks.filter((b) => results.get(b.id) === 'live').map((b) => b.id);
      const created = blocks.filter((b) => results.get(b.id) === 'created');
      if (ids.length || created.length) this.logBlockIndexEvent({ type: 'BlocksReferenced', v: 1, ids, created, at });
      return results;
    });
  }

  /** The projection function: how each event changes the three projection tables. */
  private apply(event: DomainEvent): void {
    const db = this.db;
    switch (event.type) {
      case 'BlocksRecorded': {
        this.applyChanges(changesOf(event, vouchesForUploads(this.readVersion(event.uid))));
        db.prepare('INSERT OR REPLACE INTO map_chunks (uid, chunk, entries, same_uid, same_chunk) VALUES (?, ?, ?, ?, ?)').run(
          event.uid,
          event.chunk,
          event.entries === null ? null : Buffer.from(event.entries, 'base64'),
          event.sameAs?.uid ?? null,
          event.sameAs?.chunk ?? null,
        );
        this.evolveVersionRow(event);
        return;
      }
      case 'ScrubCompleted':
        this.applyChanges(changesOf(event));
        this.evolveVersionRow(event);
        return;
      case 'BlocksMarkedUnreferenced':
      case 'BlocksReferenced':
      case 'BlocksDeletionClaimed':
      case 'BlocksDeleted':
      case 'BlocksRekeyed':
        this.applyChanges(changesOf(event));
        return;
      default:
        this.evolveVersionRow(event);
    }
  }

  private evolveVersionRow(event: DomainEvent): void {
    if (!('uid' in event)) return;
    const current = this.readVersion(event.uid);
    const next = evolveVersion(current, event);
    if (!next || next === current) return;
    this.db
      .prepare('INSERT OR REPLACE INTO versions (uid, name, date, seq, data) VALUES (?, ?, ?, ?, ?)')
      .run(next.uid, next.name, next.date, next.seq, JSON.stringify(next));
  }

  /** A row whose JSON does not parse is damage to the file, not a bug: say so, naming the file. */
  private parseRow(text: string, what: string): unknown {
    try {
      return JSON.parse(text);
    } catch {
      const damage = damagedDatabase(this.path, `${what} is not valid JSON`);
      const state = connectionState.get(this.db);
      if (state) state.damage ??= damage;
      throw damage;
    }
  }

  private readVersion(uid: string): Version | undefined {
    const row = this.db.prepare('SELECT data FROM versions WHERE uid = ?').get(uid) as { data: string } | undefined;
    return row ? (this.parseRow(row.data, `versions row ${uid}`) as Version) : undefined;
  }

  async getVersion(uid: string): Promise<Version | undefined> {
    return this.readVersion(uid);
  }

  async listVersions(): Promise<Version[]> {
    const rows = this.db.prepare('SELECT data FROM versions ORDER BY name, date').all() as { data: string }[];
    return rows.map((r) => this.parseRow(r.data, 'a versions row') as Version);
  }

  async getChunk(uid: string, chunk: number): Promise<StoredChunk | undefined> {
    const row = this.db.prepare('SELECT entries, same_uid, same_chunk FROM map_chunks WHERE uid = ? AND chunk = ?').get(uid, chunk) as
      | { entries: Uint8Array | null; same_uid: string | null; same_chunk: number | null }
      | undefined;
    if (!row) return undefined;
    return {
      entries: row.entries ? Buffer.from(row.entries) : null,
      sameAs: row.same_uid !== null ? { uid: row.same_uid, chunk: row.same_chunk! } : null,
    };
  }

  async getBlocks(ids: BlockId[]): Promise<Map<BlockId, BlockIndexEntry>> {
    const get = this.db.prepare('SELECT * FROM blocks WHERE id = ?');
    const out = new Map<BlockId, BlockIndexEntry>();
    for (const id of ids) {
      const row = get.get(id) as BlockRow | undefined;
      if (row) out.set(id, toEntry(row));
    }
    return out;
  }

  async *scanBlocks(): AsyncIterable<BlockIndexEntry[]> {
    let after = '';
    const page = this.db.prepare('SELECT * FROM blocks WHERE id > ? ORDER BY id LIMIT 1000');
    for (;;) {
      const rows = page.all(after) as unknown as BlockRow[];
      if (!rows.length) return;
      yield rows.map(toEntry);
      after = rows[rows.length - 1]!.id;
    }
  }

  async *readAllEvents(): AsyncIterable<DomainEvent> {
    for (const row of this.db.prepare('SELECT data FROM events ORDER BY pos').iterate() as Iterable<{ data: string }>) {
      yield parseEvent(this.parseRow(row.data, 'an events row'));
    }
  }

  /** Drops the projections and replays the whole event log into fresh ones. */
  rebuildProjections(): void {
    this.transaction(() => {
      for (const t of PROJECTION_TABLES) this.db.exec(`DROP TABLE IF EXISTS ${t}`);
      this.db.exec(PROJECTIONS);
      for (const row of this.db.prepare('SELECT data FROM events ORDER BY pos').all() as { data: string }[]) {
        this.apply(parseEvent(this.parseRow(row.data, 'an events row')));
      }
    });
  }

  /** A repository-wide lock (cleanup --force vs. backups), held in the database so it works across processes. */
  acquireLock(name: string, holder: string): void {
    this.transaction(() => {
      const row = this.db.prepare('SELECT holder, pid, host, at FROM locks WHERE name = ?').get(name) as
        | { holder: string; pid: number; host: string; at: string }
        | undefined;
      if (row && !(row.host === hostName() && !processAlive(row.pid)))
        throw new Backy2Error(ExitCode.locked, `Repository is locked by ${row.holder} (pid ${row.pid} on ${row.host} since ${row.at})`);
      this.db
        .prepare('INSERT OR REPLACE INTO locks (name, holder, pid, host, at) VALUES (?, ?, ?, ?, ?)')
        .run(name, holder, process.pid, hostName(), new Date().toISOString());
    });
  }

  releaseLock(name: string): void {
    this.db.prepare('DELETE FROM locks WHERE name = ? AND pid = ?').run(name, process.pid);
  }

  lockHolder(name: string): string | undefined {
    const row = this.db.prepare('SELECT holder, pid, host FROM locks WHERE name = ?').get(name) as { holder: string; pid: number; host: string } | undefined;
    if (!row || (row.host === hostName() && !processAlive(row.pid))) return undefined;
    return `${row.holder} (pid ${row.pid} on ${row.host})`;
  }

  /** Served-version leases: a table of their own, created by the first lease (older repositories lack it). */
  async putLease(lease: VersionLease): Promise<void> {
    this.transaction(() => {
      this.db.exec(LEASES);
      this.db.prepare('INSERT OR REPLACE INTO leases (uid, holder, expires_at) VALUES (?, ?, ?)').run(lease.uid, lease.holder, lease.expiresAt);
    });
  }

  async dropLease(uid: string, holder: string): Promise<void> {
    if (this.hasLeases()) this.db.prepare('DELETE FROM leases WHERE uid = ? AND holder = ?').run(uid, holder);
  }

  async listLeases(): Promise<VersionLease[]> {
    if (!this.hasLeases()) return [];
    const rows = this.db.prepare('SELECT uid, holder, expires_at FROM leases').all() as { uid: string; holder: string; expires_at: string }[];
    return rows.map((r) => ({ uid: r.uid, holder: r.holder, expiresAt: r.expires_at }));
  }

  private hasLeases(): boolean {
    return this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'leases'").get() !== undefined;
  }
}

const LEASES = 'CREATE TABLE IF NOT EXISTS leases (uid TEXT NOT NULL, holder TEXT NOT NULL, expires_at TEXT NOT NULL, PRIMARY KEY (uid, holder))';

interface BlockRow {
  id: string;
  stored_size: number;
  checksum: string;
  created_at: string;
  unreferenced_since: string | null;
  deleting: number;
  valid: number;
}

const toEntry = (r: BlockRow): BlockIndexEntry => ({
  id: r.id,
  storedSize: r.stored_size,
  checksum: r.checksum,
  createdAt: r.created_at,
  unreferencedSince: r.unreferenced_since,
  deleting: r.deleting === 1,
  valid: r.valid === 1,
});

/**
 * Databases up to this size get a `PRAGMA quick_check` at every open (measured: 126 MiB in 0.44 s,
 * about 3.5 ms per MiB, so at most ~0.2 s a command); larger ones rely on SQLite's own checks
 * (SQLITE_CORRUPT when a damaged page is read, mapped to exit 11 everywhere).
 */
export const QUICK_CHECK_MAX_BYTES = 64 * 1024 * 1024;

function open(path: string): DatabaseSync {
  const db = guardedDatabase(path);
  try {
    db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;');
    quickCheck(db, path);
  } catch (e) {
    db.close();
    throw e;
  }
  return db;
}

/** A damaged page, a truncated file or a file that is not a database is found before anything is written. */
function quickCheck(db: DatabaseSync, path: string): void {
  const size = statSync(path, { throwIfNoEntry: false })?.size ?? 0;
  if (size > QUICK_CHECK_MAX_BYTES) return;
  const rows = db.prepare('PRAGMA quick_check(5)').all() as { quick_check: string }[];
  const problems = rows.map((r) => r.quick_check).filter((m) => m !== 'ok');
  if (problems.length) throw damagedDatabase(path, `quick_check: ${problems.join('; ').replace(/\s+/g, ' ')}`);
  // quick_check sees pages, not contents: a version row that does not parse is damage too (one row per version: cheap).
  const hasVersions = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'versions'").get() !== undefined;
  if (!hasVersions) return;
  for (const row of db.prepare('SELECT uid, data FROM versions').iterate() as Iterable<{ uid: string; data: string }>) {
    try {
      JSON.parse(row.data);
    } catch {
      throw damagedDatabase(path, `the versions row of ${row.uid} is not valid JSON`);
    }
  }
}

const WRITE_SQL = /^\s*(BEGIN|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA\s+journal_mode)/i;

/**
 * The database connection, with every SQLite error turned into one line naming the file (damaged,
 * full, read-only, locked: `sqliteFault`). Once damage is seen, the connection refuses to write:
 * nothing is written to a database that failed a check (reads still go through, rollbacks too).
 */
function guardedDatabase(path: string): DatabaseSync {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path, { timeout: 30_000 });
  } catch (e) {
    throw sqliteFault(e, path) ?? osFault(e, 'database', path) ?? e;
  }
  const state: { damage: Backy2Error | null } = { damage: null };
  const fail = (e: unknown): never => {
    if (isDatabaseDamage(e)) state.damage ??= sqliteFault(e, path)!;
    throw sqliteFault(e, path) ?? e;
  };
  const refuseWrite = () => {
    if (state.damage) throw state.damage;
  };
  const guard = <F extends (...args: never[]) => unknown>(fn: F, isWrite: (args: Parameters<F>) => boolean): F =>
    ((...args: Parameters<F>) => {
      if (isWrite(args)) refuseWrite();
      try {
        return fn(...args);
      } catch (e) {
        return fail(e);
      }
    }) as F;
  const statement = (sql: string, st: StatementSync): StatementSync => {
    const writes = WRITE_SQL.test(sql);
    return new Proxy(st, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== 'function') return value;
        const bound = (value as (...a: unknown[]) => unknown).bind(target);
        if (prop === 'iterate')
          return (...args: unknown[]) => {
            const it = guard(bound, () => false)(...(args as never[])) as Iterator<unknown>;
            return {
              [Symbol.iterator]() {
                return this;
              },
              next: guard(
                () => it.next(),
                () => false,
              ),
              return: () => it.return?.() ?? { done: true, value: undefined },
            };
          };
        return guard(bound, () => writes && (prop === 'run' || prop === 'get' || prop === 'all'));
      },
    });
  };
  const guarded = new Proxy(db, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      const bound = (value as (...a: unknown[]) => unknown).bind(target);
      if (prop === 'prepare')
        return guard(
          (sql: string) => statement(sql, bound(sql) as StatementSync),
          () => false,
        );
      if (prop === 'exec') return guard(bound as (sql: string) => unknown, ([sql]) => WRITE_SQL.test(String(sql)));
      return bound;
    },
  });
  connectionState.set(guarded, state);
  return guarded;
}

/** Per connection: the damage it has seen (then it refuses to write). */
const connectionState = new WeakMap<DatabaseSync, { damage: Backy2Error | null }>();
