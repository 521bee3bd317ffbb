import pLimit from 'p-limit';
import { blockKey } from '../blocks/codec.ts';
import { holdsBlocks, isStalePending, planCleanup } from '../domain/cleanup.ts';
import type { Policy } from '../domain/version.ts';
import type { BlockIndexEntry } from '../domain/types.ts';
import type { BlockStore } from '../ports/block-store.ts';
import type { MetadataStore } from '../ports/metadata-store.ts';
import { recordedIds } from './block-map.ts';
import { executeVersionCommand } from './execute.ts';
import { Backy2Error, ExitCode } from '../domain/errors.ts';

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
}

/** One cleanup run (both phases), the same in embedded mode and in the cloud `cleanup` function. */
export async function runCleanup(store: MetadataStore, blocks: BlockStore, opts: CleanupOptions): Promise<CleanupReport> {
  const now = opts.now ?? (() => new Date());
  const log = opts.log ?? (() => {});
  const report: CleanupReport = { failedStaleBackups: [], marked: 0, unmarked: 0, deleted: 0, deletedBytes: 0 };

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
  if (opts.force) {
    const running = versions.filter((v) => v.status === 'pending');
    if (running.length)
      throw new Backy2Error(ExitCode.locked, `A backup is in progress (${running.map((v) => v.uid).join(', ')}); cleanup --force must not run in parallel with it`);
  }
  const graceSeconds = opts.force ? 0 : opts.graceSeconds;
  const pendingStarts = versions.filter((v) => v.status === 'pending').map((v) => Date.parse(v.date));
  const oldestPendingStart = pendingStarts.length ? Math.min(...pendingStarts) : null;
  const referenced = new Set<string>();
  for (const v of versions.filter(holdsBlocks)) await recordedIds(store, v, referenced);

  const sizes = new Map<string, number>();
  const limit = pLimit(opts.concurrency);
  for await (const page of store.scanBlocks()) {
    const plan = planCleanup(page, referenced, oldestPendingStart, now(), graceSeconds);
    page.forEach((e: BlockIndexEntry) => sizes.set(e.id, e.storedSize));
    await store.markUnreferenced(plan.mark, now().toISOString());
    await store.unmark(plan.unmark, now().toISOString());
    report.marked += plan.mark.length;
    report.unmarked += plan.unmark.length;
    const claimed = [...plan.resumeDeletion, ...(await store.claimForDeletion(plan.claim, now().toISOString()))];
    // Objects go first, index entries after: a crash in between leaves entries still claimed,
    // and the next run finishes them.
    await Promise.all(claimed.map((id) => limit(() => blocks.delete(blockKey(id)))));
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
  log(`Cleanup finished. ${report.marked} blocks marked unreferenced, ${report.deleted} blocks deleted (${report.deletedBytes} bytes).`);
  return report;
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
