import type { BlockIndexEntry, Version } from './types.ts';
import { runStartedAt } from './version.ts';

/**
 * The garbage-collection rule (DESIGN "Dedup and GC"), pure. No block referenced by a
 * committed version or a backup in progress is ever deleted:
 *  phase 1 marks unreferenced blocks with the time;
 *  phase 2 deletes a marked block only if it is still unreferenced, was marked at least
 *  `graceSeconds` ago, and before the start of the oldest backup still in progress
 *  (that backup may have relied on the block before it was marked).
 */
export interface CleanupPlan {
  mark: string[];
  unmark: string[];
  claim: { id: string; markedAt: string }[];
  /** Claimed by an earlier run that did not finish deleting. */
  resumeDeletion: string[];
}

export function planCleanup(
  entries: BlockIndexEntry[],
  referenced: Set<string>,
  oldestPendingStart: number | null,
  now: Date,
  graceSeconds: number,
): CleanupPlan {
  const plan: CleanupPlan = { mark: [], unmark: [], claim: [], resumeDeletion: [] };
  const markedAt = now.toISOString();
  const graceCutoff = now.getTime() - graceSeconds * 1000;
  for (const e of entries) {
    if (e.deleting) {
      plan.resumeDeletion.push(e.id);
      continue;
    }
    if (referenced.has(e.id)) {
      if (e.unreferencedSince !== null) plan.unmark.push(e.id);
      continue;
    }
    const since = e.unreferencedSince ?? markedAt;
    if (e.unreferencedSince === null) plan.mark.push(e.id);
    const t = Date.parse(since);
    if (t <= graceCutoff && (oldestPendingStart === null || t < oldestPendingStart)) plan.claim.push({ id: e.id, markedAt: since });
  }
  return plan;
}

/** Versions whose blocks must be kept: committed ones and backups in progress. */
export const holdsBlocks = (v: Version) => v.status === 'committed' || v.status === 'pending';

/** A pending backup older than the maximum age is dead: it is failed and stops holding the GC cutoff. */
export const isStalePending = (v: Version, now: Date, maxBackupAgeSeconds: number) =>
  v.status === 'pending' && now.getTime() - runStartedAt(v) > maxBackupAgeSeconds * 1000;

/** Committed, unprotected versions past their expiry date: what retention removes. */
export const isExpired = (v: Version, now: Date) =>
  v.status === 'committed' && !v.protected && v.expire !== null && Date.parse(v.expire) < now.getTime();
