import { isLive, type TouchResult } from './block-index.ts';
import { BlockPlan } from './hints.ts';
import type { BlockIndexEntry, BlockRef, VersionStats } from './types.ts';
import type { VersionCommand } from './version.ts';

/**
 * The garbage-collection rules a backup (and an import, which relies on objects it never
 * uploaded) follows, pure. The rules of the index itself are in block-index.ts, cleanup's in
 * cleanup.ts; docs/DESIGN-NOTES.md maps each step of the invariant to its function.
 */

/**
 * The commands that let a run rely on stored objects no index entry may know yet: their start must
 * be durable before anything is looked up (DESIGN-NOTES 1), and in embedded mode they wait for a
 * running `cleanup -f` (which deletes objects no index entry knows) before and after their start;
 * a cleanup that took its lock in between may have listed the versions without this one.
 */
export const reliesOnStoredObjects = (cmd: VersionCommand): boolean => cmd.type === 'StartVersion' || cmd.type === 'ImportVersion';

/** How long a start waits for `cleanup -f`: checks a second apart, then fails clearly. */
export const CLEANUP_LOCK_WAIT = { checks: 60, intervalMs: 1000 } as const;

/**
 * After touching an object it found already stored (DESIGN-NOTES 3): a live entry is relied on;
 * a created one only once the object is seen to exist still (else it is uploaded again); one being
 * deleted means waiting until the deletion is done, then uploading again.
 */
export type AfterTouch = 'rely' | 'recheck object' | 'wait for deletion';

export function afterTouch(found: TouchResult | undefined): AfterTouch {
  if (found === 'live') return 'rely';
  if (found === 'created') return 'recheck object';
  return 'wait for deletion';
}

/**
 * The decision for one block of a backup, in the order its facts become known (each question is
 * asked only if the earlier ones did not decide): all zeros → sparse (recorded, never stored);
 * already handled earlier in this run → the same; the base version holds it at this position →
 * reused without asking the index (the base is committed and valid, checked at the start); the
 * index lists it live → dedup; the stored copy failed a scrub → replace it; else upload with
 * If-None-Match (an object that exists already is relied on through a touch).
 */
export type BlockAction = 'sparse' | 'same as earlier' | 'reuse base' | 'dedup' | 'upload' | 'replace invalid copy';

export function decideByContent(facts: { zero: boolean; seenThisRun: boolean; sameAsBase: boolean }): BlockAction | 'ask the index' {
  if (facts.zero) return 'sparse';
  if (facts.seenThisRun) return 'same as earlier';
  if (facts.sameAsBase) return 'reuse base';
  return 'ask the index';
}

export function decideByIndex(entry: BlockIndexEntry | undefined): 'dedup' | 'upload' | 'replace invalid copy' {
  if (isLive(entry)) return 'dedup';
  if (entry && !entry.valid && !entry.deleting) return 'replace invalid copy';
  return 'upload';
}

/** How a block counts in the version's stats. */
export type BlockOutcome = 'sparse' | 'dedup' | 'written';

/** `stored`: asking the index led to an upload of a new object (else one existed and is relied on). */
export function outcomeOf(action: BlockAction | 'ask the index', stored = false): BlockOutcome {
  if (action === 'sparse') return 'sparse';
  if (action === 'replace invalid copy' || ((action === 'upload' || action === 'ask the index') && stored)) return 'written';
  return 'dedup';
}

/** Counts one block, once. */
export function countBlock(stats: VersionStats, outcome: BlockOutcome, bytesWritten = 0): void {
  if (outcome === 'sparse') stats.blocksSparse++;
  else if (outcome === 'dedup') stats.blocksDedup++;
  else stats.blocksWritten++;
  stats.bytesWritten += bytesWritten;
}

/** A block recorded without reading it (a hinted backup, or a chunk an interrupted run recorded). */
export const outcomeOfRecorded = (ref: BlockRef): BlockOutcome => (ref.id === null ? 'sparse' : 'dedup');

/**
 * The entry a hinted backup records without reading the block, or null when it must be read:
 * `zero` is sparse; otherwise the base's entry at that position (sparse without a base), unless
 * the base has no block of that length there (the source grew, or its last block changed size).
 * `base` is undefined for a backup without a base version, null when the base lacks this chunk.
 */
export function hintedEntry(plan: number, idx: number, length: number, base: BlockRef | null | undefined): BlockRef | null {
  if (plan === BlockPlan.read) return null;
  if (plan === BlockPlan.zero || base === undefined) return { idx, id: null, length };
  if (base === null || base.length !== length) return null;
  return { idx, id: base.id, length };
}
