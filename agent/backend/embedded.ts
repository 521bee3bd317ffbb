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
import type { EventOf } from '../../shared/domain/events.ts';
import type { Policy, VersionCommand } from '../../shared/domain/version.ts';
import type { BlockId, StoredBlock, Version } from '../../shared/domain/types.ts';
import { DirBlockStore } from '../../shared/adapters/local/dir-block-store.ts';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import type { Catalog } from '../../shared/ports/catalog.ts';
import type { TouchResult } from '../../shared/ports/metadata-store.ts';
import { policyOf, type Backend } from './backend.ts';

export const CLEANUP_LOCK = 'cleanup-force';
/** Held by every cleanup run; backups do not wait for it. */
export const CLEANUP_RUN_LOCK = 'cleanup';

/** Embedded catalog: the shared command handlers called in-process against SQLite. */
export class EmbeddedCatalog implements Catalog {
  readonly store: SqliteMetadataStore;
  private readonly policy: Policy;
  readonly reader: SqliteMetadataStore;
  constructor(store: SqliteMetadataStore, policy: Policy) {
    this.store = store;
    this.reader = store;
    this.policy = policy;
  }

  async execute(cmd: VersionCommand): Promise<Version> {
    // An import relies on stored objects no index entry may know yet, as a backup's uploads: same wait.
    if (cmd.type !== 'StartVersion' && cmd.type !== 'ImportVersion') return executeVersionCommand(this.store, cmd, this.policy);
    await this.waitForCleanupLock();
    const started = await executeVersionCommand(this.store, cmd, this.policy);
    // A cleanup --force that took its lock between the check above and the start may have listed
    // the versions without this one (and deletes objects no index entry knows): wait until it is
    // done before the backup looks anything up or uploads anything.
    try {
      await this.waitForCleanupLock();
    } catch (e) {
      await executeVersionCommand(this.store, { type: 'FailVersion', uid: started.uid, reason: (e as Error).message }, this.policy).catch(() => {});
      throw e;
    }
    return started;
  }

  /** A backup waits (up to a minute) for a running `cleanup --force`, then fails clearly. */
  private async waitForCleanupLock(): Promise<void> {
    for (let waited = 0; ; waited++) {
      const holder = this.store.lockHolder(CLEANUP_LOCK);
      if (!holder) return;
      if (waited >= 60) throw new Backy2Error(ExitCode.locked, `Repository is locked by ${holder}; backup not started`);
      await sleep(1000);
    }
  }

  async record(event: EventOf<'BlocksRecorded'>): Promise<void> {
    await this.store.recordChunk(event);
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

  /** `keys`: as loaded from the key ring (open.ts); a bare master key stands for a repository that never rotated. */
  constructor(config: Config, paths: EmbeddedPaths, store: SqliteMetadataStore, keys: RepositoryKeys | Buffer) {
    this.config = config;
    this.policy = policyOf(config);
    this.catalog = new EmbeddedCatalog(store, this.policy);
    mkdirSync(paths.dataPath, { recursive: true });
    this.blocks = new DirBlockStore(paths.dataPath);
    const repoKeys = Buffer.isBuffer(keys) ? deriveKeys(keys) : keys;
    checkKeyId(store, repoKeys.keyId.toString('hex'));
    // Hashing, compression and encryption on worker threads, one per core.
    this.codec = new BlockCodec(repoKeys, Math.max(config.blockSize, 4 * 1024 * 1024), { workers: availableParallelism() });
  }

  async cleanup(force: boolean, log: (line: string) => void): Promise<CleanupReport> {
    const store = this.catalog.store;
    const opts = { force, graceSeconds: this.config.cleanupGraceSeconds, policy: this.policy, concurrency: this.config.simultaneousWrites, log };
    // One cleanup at a time (as backy2's cleanup lock): a second run would delete blocks the first
    // claimed a second time, possibly after a backup uploaded one of them anew in between.
    store.acquireLock(CLEANUP_RUN_LOCK, force ? 'backy2 cleanup --force' : 'backy2 cleanup');
    try {
      if (!force) return await runCleanup(store, this.blocks, opts);
      // The lock makes backups that start meanwhile wait (EmbeddedCatalog.execute), so objects of
      // crashed backups that no index entry knows can go too.
      store.acquireLock(CLEANUP_LOCK, 'backy2 cleanup --force');
      try {
        return await runCleanup(store, this.blocks, { ...opts, deleteOrphans: true });
      } finally {
        store.releaseLock(CLEANUP_LOCK);
      }
    } finally {
      store.releaseLock(CLEANUP_RUN_LOCK);
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
      return await runRekey(store, this.blocks, this.codec, opts);
    } finally {
      store.releaseLock(CLEANUP_RUN_LOCK);
    }
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
    throw new Backy2Error(ExitCode.integrity, `Wrong encryption key: this repository was written with key id ${accepted.join(', ')}, the configured key has id ${keyId}`);
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
