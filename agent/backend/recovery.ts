import { DirBlockStore } from '../../shared/adapters/local/dir-block-store.ts';
import { SqliteMetadataStore } from '../../shared/adapters/local/sqlite-store.ts';
import { deriveJournalKey, Journal } from '../../shared/app/journal.ts';
import { loadRepositoryKeys, oldMasterKeys, ringKeyIds } from '../../shared/app/rekey.ts';
import { parseMasterKey, type RepositoryKeys } from '../../shared/blocks/keys.ts';
import type { Config } from '../../shared/config/config.ts';
import { Backy2Error, ExitCode } from '../../shared/domain/errors.ts';
import type { BlockStore } from '../../shared/ports/block-store.ts';
import type { MetadataStore } from '../../shared/ports/metadata-store.ts';
import type { Log } from '../ui/log.ts';
import { explainLocalFault } from '../../shared/adapters/faults.ts';
import { acceptKeyId, CLEANUP_LOCK, CLEANUP_RUN_LOCK, EmbeddedBackend } from './embedded.ts';
import { defaultKey, embeddedPaths, resolveConfig } from './open.ts';

/**
 * What `recover` works with: the storage and the journal key first (read and verified before
 * any metadata store is touched), then, on `begin`, the metadata store to rebuild.
 */
export interface Recovery {
  readonly where: string;
  readonly config: Config;
  readonly blocks: BlockStore;
  readonly journal: Journal;
  /**
   * Opens (embedded: creates) the metadata store and marks a recover in progress. Refuses
   * (exit 25) a store that holds versions, unless `merge` or it is a recover that was interrupted.
   */
  begin(merge: boolean): Promise<RecoveryTarget>;
  /** Storage and SDK errors as one line naming what failed (as the backends' explain). */
  explain?(e: unknown): unknown;
  close(): Promise<void>;
}

export interface RecoveryTarget {
  store: MetadataStore;
  /** The last block-index journal event applied by an interrupted run (see replayPlan). */
  lastIndexEvent: string | null;
  indexEventApplied(key: string): Promise<void>;
  /** The recover completed: the marker goes, the locks are released. */
  finish(): Promise<void>;
  close(): Promise<void>;
}

const MARKER = 'recover_in_progress';
const INDEX_MARK = 'recover_last_index_event';

export async function openRecovery(configFile: string | undefined, log: Log): Promise<Recovery> {
  const { config, isDefault } = resolveConfig(configFile);
  if (config.aws) {
    const { openCloudRecovery } = await import('./cloud-recovery.ts');
    return openCloudRecovery(config, log);
  }
  const paths = embeddedPaths(config, isDefault);
  const master = isDefault ? defaultKey(log, false) : parseMasterKey(config.encryptionKeyHex, `[DEFAULTS] encryption_key in ${config.source}`);
  const blocks = new DirBlockStore(paths.dataPath);
  const keys: RepositoryKeys = await loadRepositoryKeys(blocks, master, oldMasterKeys(config));
  return {
    where: paths.dataPath,
    config,
    blocks,
    journal: new Journal(blocks, deriveJournalKey(keys.dedupKey)),
    async begin(merge) {
      const store = SqliteMetadataStore.exists(paths.sqlitePath) ? SqliteMetadataStore.open(paths.sqlitePath) : SqliteMetadataStore.init(paths.sqlitePath);
      let backend: EmbeddedBackend | undefined;
      try {
        const resuming = store.db.prepare('SELECT value FROM meta WHERE key = ?').get(MARKER) !== undefined;
        const held = (store.db.prepare('SELECT COUNT(*) AS n FROM versions').get() as { n: number }).n;
        if (held && !resuming && !merge)
          throw new Backy2Error(
            ExitCode.recoverNotEmpty,
            `${paths.sqlitePath} already holds ${held} versions; recover rebuilds an empty store (move the file away), or add --merge to add what the journal holds beyond it`,
          );
        // The key check of every command (meta key_id), and the keys add-key accepted.
        backend = new EmbeddedBackend(config, paths, store, keys);
        for (const id of await ringKeyIds(blocks)) if (id !== keys.keyId.toString('hex')) acceptKeyId(store, id);
        store.acquireLock(CLEANUP_RUN_LOCK, 'backy2 recover');
        store.acquireLock(CLEANUP_LOCK, 'backy2 recover');
        store.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(MARKER, new Date().toISOString());
        if (!resuming) store.db.prepare('DELETE FROM meta WHERE key = ?').run(INDEX_MARK);
        if (resuming) log.info(`Continuing the interrupted recover into ${paths.sqlitePath}`);
      } catch (e) {
        if (backend) await backend.close();
        else store.close();
        throw e;
      }
      const opened = backend;
      const meta = (key: string) => (store.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value ?? null;
      const setMeta = (key: string, value: string) => store.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(key, value);
      return {
        store,
        lastIndexEvent: meta(INDEX_MARK),
        async indexEventApplied(key) {
          setMeta(INDEX_MARK, key);
        },
        async finish() {
          store.db.prepare('DELETE FROM meta WHERE key IN (?, ?)').run(MARKER, INDEX_MARK);
        },
        async close() {
          store.releaseLock(CLEANUP_LOCK);
          store.releaseLock(CLEANUP_RUN_LOCK);
          await opened.close();
        },
      };
    },
    explain: (e) => explainLocalFault(e, paths),
    async close() {},
  };
}
