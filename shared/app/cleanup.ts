import pLimit from 'p-limit';
import { blockKey, manifestKey, storedChecksum } from '../blocks/codec.ts';

const MANIFEST_PREFIX = manifestKey('');
import {
  graceSecondsOf,
  isStalePending,
  mayDeleteResumed,
  oldestPendingStart,
  planCleanup,
  refuseForceWhileBackupRuns,
  versionsHoldingBlocks,
  withoutLateStarters,
} from '../domain/cleanup.ts';
import type { Policy } from '../domain/version.ts';
import type { BlockIndexEntry } from '../domain/types.ts';
import type { BlockStore } from '../ports/block-store.ts';
import type { MetadataStore } from '../ports/metadata-store.ts';
import { recordedIds } from './block-map.ts';
import { executeVersionCommand } from './execute.ts';

export interface CleanupOptions {
  graceSeconds: number;
  /** Ignore the grace period; refused while a (not stale) backup is in progress. */
  force: boolean;
  /**
   * Also delete stored objects the index does not know (left by crashed backups), as backy2's full
   * cleanup. Only safe while no backup can start: the embedded backend holds its lock for it.
   */
  deleteOrphans?: boolean;
  policy: Policy;
  concurrency: number;
  now?: () => Date;
  log?: (line: string) => void;
}

export interface CleanupReport {
  failedStaleBackups: string[];
  marked: number;
  unmarked: number;
  deleted: number;
  deletedBytes: number;
  /** Manifests (`manifests/<uid>`) of removed versions deleted. */
  manifestsDeleted: number;
  /** Embedded: temporary files of killed or failed writes removed (DirBlockStore.removeStaleTemporaries). */
  temporariesRemoved?: number;
}

/** One cleanup run (both phases), the same in embedded mode and in the cloud `cleanup` function. */
export async function runCleanup(store: MetadataStore, blocks: BlockStore, opts: CleanupOptions): Promise<CleanupReport> {
  const now = opts.now ?? (() => new Date());
  const log = opts.log ?? (() => {});
  const report: CleanupReport = { failedStaleBackups: [], marked: 0, unmarked: 0, deleted: 0, deletedBytes: 0, manifestsDeleted: 0 };

  for (const v of await store.listVersions()) {
    if (isStalePending(v, now(), opts.policy.maxBackupAgeSeconds)) {
      await executeVersionCommand(store, { type: 'FailVersion', uid: v.uid, reason: 'backup exceeded the maximum age' }, opts.policy, now);
      report.failedStaleBackups.push(v.uid);
      log(`Failed stale backup ${v.uid} (started ${v.date})`);
    }
  }
  // Pending versions are read before their references: one that starts later cannot rely on
  // a block marked before it started without touching it (which unmarks it).
  const versions = await store.listVersions();
  if (opts.force) refuseForceWhileBackupRuns(versions);
  const graceSeconds = graceSecondsOf(opts.force, opts.graceSeconds);
  const pendingCutoff = oldestPendingStart(versions);
  // Leases are listed after the versions (see VersionLease): a version served now is either
  // still committed in that list or pinned by a lease in this one.
  const leases = await store.listLeases();
  const referenced = new Set<string>();
  for (const v of versionsHoldingBlocks(versions, leases, now())) await recordedIds(store, v, referenced);

  const sizes = new Map<string, number>();
  const limit = pLimit(opts.concurrency);
  const known = new Set(versions.map((v) => v.uid));
  for await (const page of store.scanBlocks()) {
    const markedAt = now();
    const plan = planCleanup(page, referenced, pendingCutoff, markedAt, graceSeconds);
    for (const e of page) sizes.set(e.id, e.storedSize);
    await store.markUnreferenced(plan.mark, markedAt.toISOString());
    const markWritten = now().getTime();
    await store.unmark(plan.unmark, now().toISOString());
    report.marked += plan.mark.length;
    report.unmarked += plan.unmark.length;
    // Late starters (domain/cleanup.ts): the versions are read again after the marks are written.
    const claims = plan.claim.length ? withoutLateStarters(plan.claim, await store.listVersions(), known, new Set(plan.mark), markWritten) : [];
    const fresh = await store.claimForDeletion(claims, now().toISOString());
    const claimed = [...plan.resumeDeletion, ...fresh];
    // Objects go first, index entries after: a crash in between leaves entries still claimed,
    // and the next run finishes them. A resumed deletion first checks that the object is still
    // the one the entry describes: after the crash, a backup may have uploaded the block anew
    // (its record, not yet projected, will re-create the entry).
    const entries = new Map(page.map((e) => [e.id, e]));
    await Promise.all([
      ...fresh.map((id) => limit(() => blocks.delete(blockKey(id)))),
      ...plan.resumeDeletion.map((id) => limit(() => deleteIfIndexed(blocks, entries.get(id)!))),
    ]);
    await store.removeBlocks(claimed, now().toISOString());
    report.deleted += claimed.length;
    report.deletedBytes += claimed.reduce((sum, id) => sum + (sizes.get(id) ?? 0), 0);
    sizes.clear();
  }
  if (opts.force && opts.deleteOrphans) {
    const orphans = await findOrphans(store, blocks);
    await Promise.all(orphans.map((key) => limit(() => blocks.delete(key))));
    report.deleted += orphans.length;
    if (orphans.length) log(`Deleted ${orphans.length} stored objects no index entry knows`);
  }
  report.manifestsDeleted = await deleteManifestsOfRemoved(blocks, new Set(versions.filter((v) => v.status === 'removed').map((v) => v.uid)), limit);
  log(`Cleanup finished. ${report.marked} blocks marked unreferenced, ${report.deleted} blocks deleted (${report.deletedBytes} bytes).`);
  return report;
}

/**
 * A removed version's manifest goes with its blocks. Manifests of uids the metadata does not know
 * stay: they are what a repository whose metadata was lost is rebuilt from.
 */
async function deleteManifestsOfRemoved(blocks: BlockStore, removed: Set<string>, limit: ReturnType<typeof pLimit>): Promise<number> {
  if (!removed.size) return 0;
  const doomed: string[] = [];
  for await (const key of blocks.list(MANIFEST_PREFIX)) if (removed.has(key.slice(MANIFEST_PREFIX.length))) doomed.push(key);
  await Promise.all(doomed.map((key) => limit(() => blocks.delete(key))));
  return doomed.length;
}

async function findOrphans(store: MetadataStore, blocks: BlockStore): Promise<string[]> {
  const orphans: string[] = [];
  let page: string[] = [];
  const check = async () => {
    const known = await store.getBlocks(page.map((key) => key.slice(key.lastIndexOf('/') + 1)));
    orphans.push(...page.filter((key) => !known.has(key.slice(key.lastIndexOf('/') + 1))));
    page = [];
  };
  for await (const key of blocks.list('blocks/')) {
    page.push(key);
    if (page.length === 1000) await check();
  }
  if (page.length) await check();
  return orphans;
}

/** Deletes a block's object only if it is the one its index entry was made for (same checksum). */
async function deleteIfIndexed(blocks: BlockStore, entry: BlockIndexEntry): Promise<void> {
  const key = blockKey(entry.id);
  const stored = await blocks.get(key);
  if (stored !== null && mayDeleteResumed(entry, storedChecksum(stored))) await blocks.delete(key);
}
