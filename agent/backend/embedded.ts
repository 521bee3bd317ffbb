import { mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCleanup, type CleanupReport } from '../../shared/app/cleanup.ts';
import { leaseExpiry } from '../../shared/domain/cleanup.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { addKeyToRing, runRekey, type AddKeyResult, type RekeyOptions, type RekeyReport } from '../../shared/app/rekey.ts';
import { BlockCodec } from '../../shared/blocks/codec.ts';
import { deriveKeys, type RepositoryKeys } from '../../shared/blocks/keys.ts';
import type { Config } from '../../shared/config/config.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import { CLEANUP_LOCK_WAIT, reliesOnStoredObjects } from '../../shared/domain/backup.ts';
import { CLEANUP_FORCE_LOCK, CLEANUP_RUN_LOCK, cleanupLocks } from '../../shared/domain/cleanup.ts';
import type { EventOf } from '../../shared/domain/events.ts';
import type { Policy, VersionCommand } from '../../shared/domain/version.ts';
import type { BlockId, StoredBlock, Version } from '../../shared/domain/types.ts';
import { DirBlockStore } from '../../shared/adapters/local/dir-block-store.ts';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { explainLocalFault } from '../../shared/adapters/faults.ts';
import type { Catalog } from '../../shared/ports/catalog.ts';
import type { MetadataStore, TouchResult } from '../../shared/ports/metadata-store.ts';
import { policyOf, type Backend } from './backend.ts';
import { deriveJournalKey, Journal } from '../../shared/app/journal.ts';
import { journaled } from '../../shared/app/journaled-store.ts';

/** The embedded cleanup locks (rules in shared/domain/cleanup.ts). */
export { CLEANUP_FORCE_LOCK as CLEANUP_LOCK, CLEANUP_RUN_LOCK } from '../../shared/domain/cleanup.ts';

/** Embedded catalog: the shared command handlers called in-process against SQLite. */
export class EmbeddedCatalog implements Catalog {
  readonly store: SqliteMetadataStore;
  /** Every change goes through it: the journal next to the blocks is written first (recover). */
  readonly writer: MetadataStore;
  private readonly policy: Policy;
  readonly reader: SqliteMetadataStore;
  constructor(store: SqliteMetadataStore, policy: Policy, journal: Journal) {
    this.store = store;
    this.reader = store;
    this.writer = journaled(store, journal);
    this.policy = policy;
  }

  async execute(cmd: VersionCommand): Promise<Version> {
    if (!reliesOnStoredObjects(cmd)) return executeVersionCommand(this.writer, cmd, this.policy);
    await this.waitForCleanupLock();
    const started = await executeVersionCommand(this.writer, cmd, this.policy);
    // Again after the start (shared/domain/backup.ts, reliesOnStoredObjects).
    try {
      await this.waitForCleanupLock();
    } catch (e) {
      await executeVersionCommand(this.writer, { type: 'FailVersion', uid: started.uid, reason: (e as Error).message }, this.policy).catch(() => {});
      throw e;
    }
    return started;
  }

  /** A backup waits (up to a minute) for a running `cleanup --force`, then fails clearly. */
  private async waitForCleanupLock(): Promise<void> {
    for (let waited = 0; ; waited++) {
      const holder = this.store.lockHolder(CLEANUP_FORCE_LOCK);
      if (!holder) return;
      if (waited >= CLEANUP_LOCK_WAIT.checks) throw new Backy2Error(ExitCode.locked, `Repository is locked by ${holder}; backup not started`);
      await sleep(CLEANUP_LOCK_WAIT.intervalMs);
    }
  }

  async record(event: EventOf<'BlocksRecorded'>): Promise<void> {
    await this.writer.recordChunk(event);
  }

  async awaitRecorded(uid: string, chunkCount: number): Promise<void> {
    const v = await this.store.getVersion(uid);
    if (!v || v.recordedChunks < chunkCount) throw new Backy2Error(ExitCode.unexpected, `Version ${uid}: block map incomplete`);
  }

  touch(blocks: StoredBlock[]): Promise<Map<BlockId, TouchResult>> {
    return this.store.touchBlocks(blocks, new Date().toISOString());
  }

  holdLease(uid: string, holder: string, seconds: number): Promise<void> {
    return this.store.putLease({ uid, holder, expiresAt: leaseExpiry(new Date(), seconds) });
  }

  dropLease(uid: string, holder: string): Promise<void> {
    return this.store.dropLease(uid, holder);
  }

  async close(): Promise<void> {
    this.store.close();
  }
}

export interface EmbeddedPaths {
  sqlitePath: string;
  dataPath: string;
}

export class EmbeddedBackend implements Backend {
  readonly kind = 'embedded' as const;
  readonly config: Config;
  readonly policy: Policy;
  readonly catalog: EmbeddedCatalog;
  readonly blocks: DirBlockStore;
  readonly codec: BlockCodec;
  readonly paths: EmbeddedPaths;

  /** `keys`: as loaded from the key ring (open.ts); a bare master key stands for a repository that never rotated. */
  constructor(config: Config, paths: EmbeddedPaths, store: SqliteMetadataStore, keys: RepositoryKeys | Buffer) {
    this.config = config;
    this.policy = policyOf(config);
    this.paths = paths;
    mkdirSync(paths.dataPath, { recursive: true });
    this.blocks = new DirBlockStore(paths.dataPath);
    const repoKeys = Buffer.isBuffer(keys) ? deriveKeys(keys) : keys;
    this.catalog = new EmbeddedCatalog(store, this.policy, new Journal(this.blocks, deriveJournalKey(repoKeys.dedupKey)));
    checkKeyId(store, repoKeys.keyId.toString('hex'));
    // Hashing, compression and encryption on worker threads, one per core.
    this.codec = new BlockCodec(repoKeys, Math.max(config.blockSize, 4 * 1024 * 1024), { workers: availableParallelism() });
  }

  async cleanup(force: boolean, log: (line: string) => void): Promise<CleanupReport> {
    const store = this.catalog.store;
    const writer = this.catalog.writer;
    const opts = { force, graceSeconds: this.config.cleanupGraceSeconds, policy: this.policy, concurrency: this.config.simultaneousWrites, log };
    // The locks of shared/domain/cleanup.ts (cleanupLocks), taken in order and released in reverse.
    const held: string[] = [];
    try {
      for (const lock of cleanupLocks(force)) {
        store.acquireLock(lock, force ? 'backy2 cleanup --force' : 'backy2 cleanup');
        held.push(lock);
      }
      // Holding the force lock, objects of crashed backups that no index entry knows can go too.
      const report = await runCleanup(writer, this.blocks, { ...opts, deleteOrphans: held.includes(CLEANUP_FORCE_LOCK) });
      // Temporary files of killed writers hold space a full disk needs back (-f: also the old-style ones among the blocks).
      const temporaries = await this.blocks.removeStaleTemporaries({ legacy: force });
      if (temporaries.files) log(`Removed ${temporaries.files} stale temporary files (${temporaries.bytes} bytes)`);
      return { ...report, temporariesRemoved: temporaries.files };
    } finally {
      for (const lock of held.reverse()) store.releaseLock(lock);
    }
  }

  async addKey(newMaster: Buffer): Promise<AddKeyResult> {
    const result = await addKeyToRing(this.blocks, this.codec.keys, newMaster);
    acceptKeyId(this.catalog.store, result.keyId);
    return result;
  }

  /** Under the cleanup run lock: a cleanup cannot delete a block between rekey's check and its overwrite. */
  async rekey(opts: RekeyOptions): Promise<RekeyReport> {
    const store = this.catalog.store;
    store.acquireLock(CLEANUP_RUN_LOCK, opts.dryRun ? 'backy2 rekey --dry-run' : 'backy2 rekey');
    try {
      return await runRekey(this.catalog.writer, this.blocks, this.codec, opts);
    } finally {
      store.releaseLock(CLEANUP_RUN_LOCK);
    }
  }

  explain(e: unknown): unknown {
    return explainLocalFault(e, this.paths);
  }

  async close(): Promise<void> {
    await this.codec.close();
    await this.catalog.close();
  }
}

/**
 * The repository remembers the id of its key, and of every key `add-key` added (meta
 * `accepted_key_ids`): a wrong key fails every command up front, before anything is read or written.
 */
function checkKeyId(store: SqliteMetadataStore, keyId: string): void {
  const row = store.db.prepare("SELECT value FROM meta WHERE key = 'key_id'").get() as { value: string } | undefined;
  if (!row) {
    store.db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('key_id', ?)").run(keyId);
    return;
  }
  const accepted = [row.value, ...acceptedKeyIds(store)];
  if (!accepted.includes(keyId))
    throw new Backy2Error(
      ExitCode.integrity,
      `Wrong encryption key: this repository was written with key id ${accepted.join(', ')}, the configured key has id ${keyId}`,
    );
}

const acceptedKeyIds = (store: SqliteMetadataStore): string[] =>
  ((store.db.prepare("SELECT value FROM meta WHERE key = 'accepted_key_ids'").get() as { value: string } | undefined)?.value ?? '').split(',').filter(Boolean);

/** `add-key`: the repository accepts this key id from now on (its ring entry is written first). */
export function acceptKeyId(store: SqliteMetadataStore, keyId: string): void {
  store.transaction(() => {
    const ids = acceptedKeyIds(store);
    if (!ids.includes(keyId)) store.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('accepted_key_ids', ?)").run([...ids, keyId].join(','));
  });
}
