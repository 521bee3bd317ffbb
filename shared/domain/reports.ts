import type { BlockRef, Version } from './types.ts';

/**
 * The arithmetic of the report commands (`stats`, `du`, `diff-meta`), pure: the callers in
 * shared/app/reports.ts read the block maps and the block index and hand the numbers in.
 */

/** One row of `stats`: one per committed backup run, as backy2's `stats` table. */
export interface StatsRow {
  date: string;
  uid: string;
  name: string;
  sizeBytes: number;
  sizeBlocks: number;
  bytesRead: number;
  blocksRead: number;
  /** Bytes stored after compression and encryption (backy2 counted plaintext). */
  bytesWritten: number;
  blocksWritten: number;
  bytesDedup: number;
  blocksDedup: number;
  bytesSparse: number;
  blocksSparse: number;
  durationSeconds: number;
}

/** How the backup run handled the version's last block when it is short (null: not short, or no blocks). */
export type LastBlockOutcome = 'sparse' | 'dedup' | 'written' | null;

/**
 * A version's stats row, or null when it has none (a backup that never committed: pending or failed).
 * The run's stats keep block counts and bytes read/written; the bytes of the dedup'd and sparse
 * blocks are their counts times the block size, less the shortfall of a short last block counted
 * among them. Every block read is full except the last, so ceil(bytes read / block size) is the
 * number of blocks read.
 */
export function statsRowOf(v: Version, lastBlock: LastBlockOutcome): StatsRow | null {
  const s = v.stats;
  if (!s) return null;
  const shortfall = v.blockCount * v.blockSize - v.sizeBytes;
  return {
    date: v.date,
    uid: v.uid,
    name: v.name,
    sizeBytes: v.sizeBytes,
    sizeBlocks: v.blockCount,
    bytesRead: s.bytesRead,
    blocksRead: Math.ceil(s.bytesRead / v.blockSize),
    bytesWritten: s.bytesWritten,
    blocksWritten: s.blocksWritten,
    bytesDedup: s.blocksDedup * v.blockSize - (lastBlock === 'dedup' ? shortfall : 0),
    blocksDedup: s.blocksDedup,
    bytesSparse: s.blocksSparse * v.blockSize - (lastBlock === 'sparse' ? shortfall : 0),
    blocksSparse: s.blocksSparse,
    durationSeconds: s.durationSeconds,
  };
}

/**
 * Whether a run wrote or dedup'd the short last block, from what is known without its events:
 * the counts decide when the run did only one of the two; otherwise `createdInRun` says whether
 * the block's index entry was created during the run (undefined when the entry is gone).
 */
export function lastBlockOutcome(v: Version, sparse: boolean, createdInRun: boolean | undefined): LastBlockOutcome {
  if (!v.stats || v.blockCount === 0 || v.sizeBytes % v.blockSize === 0) return null;
  if (sparse) return 'sparse';
  if (v.stats.blocksWritten === 0) return 'dedup';
  if (v.stats.blocksDedup === 0) return 'written';
  // A short block is unique within its version (only the last block is short), so a run that
  // created its entry wrote it. Without the entry: an incremental run most likely kept it.
  if (createdInRun !== undefined) return createdInRun ? 'written' : 'dedup';
  return v.baseUid ? 'dedup' : 'written';
}

/** Oldest first; `limit` keeps the newest N (backy2: `stats -l N`). */
export function selectStats(rows: StatsRow[], limit?: number): StatsRow[] {
  const sorted = [...rows].sort((a, b) => a.date.localeCompare(b.date) || a.uid.localeCompare(b.uid));
  return limit === undefined ? sorted : limit <= 0 ? [] : sorted.slice(-limit);
}

/** backy2's `du` columns, in bytes. `estSpace` is fractional (a share of blocks used elsewhere too). */
export interface Usage {
  real: number;
  null: number;
  dedupOwn: number;
  dedupOthers: number;
  individual: number;
  estSpace: number;
  estSpaceFreed: number;
}

export const emptyUsage = (): Usage => ({ real: 0, null: 0, dedupOwn: 0, dedupOthers: 0, individual: 0, estSpace: 0, estSpaceFreed: 0 });

/**
 * Adds one distinct block of a version to its usage, exactly as backy2's `du` (sql.py):
 * `own` = references in this version, `all` = references in every version holding blocks
 * (this one included), `size` = the block's bytes (plaintext, or stored for the "after
 * compression" figures).
 *  - Real counts every reference;
 *  - a block also used by another version is Dedup Others (all of its references here);
 *  - else a block used several times here is Dedup Own (all but one reference);
 *  - else it is Individual;
 *  - Est. Space adds size / all (once per distinct block, as backy2, not per reference);
 *  - Est. Space freed (what `rm` + `cleanup` would free) adds the blocks no other version uses.
 */
export function addBlockUsage(u: Usage, size: number, own: number, all: number): void {
  const others = all - own;
  u.real += size * own;
  if (others > 0) u.dedupOthers += size * own;
  else if (own > 1) u.dedupOwn += size * (own - 1);
  else u.individual += size;
  u.estSpace += size / all;
  if (others === 0) u.estSpaceFreed += size;
}

/** backy2's diff-meta states, per block index. */
export type DiffStatus = 'SAME' | 'DIFF' | 'NEW LEFT' | 'NEW RIGHT';

/**
 * Same block id (both sparse counts as the same, if equally long) → SAME; a position only one
 * version has (they differ in length) → NEW LEFT / NEW RIGHT; anything else → DIFF.
 */
export function diffStatus(left: BlockRef | undefined, right: BlockRef | undefined): DiffStatus {
  if (left && !right) return 'NEW LEFT';
  if (!left && right) return 'NEW RIGHT';
  if (!left || !right) throw new Error('diffStatus: neither version has this block');
  return left.id === right.id && left.length === right.length ? 'SAME' : 'DIFF';
}
