import type { BlockId, BlockRef, Version } from './types.ts';
import type { VersionCommand } from './version.ts';

/**
 * The rules of a scrub, pure: which blocks it checks, what makes a stored object fail, and which
 * versions its verdict marks. A failed block invalidates its index entry (block-index.ts,
 * `invalidated`), so no backup dedups against it and the next upload replaces it.
 */
export interface BlockFailure {
  id: BlockId;
  reason: string;
}

/** Picks the blocks a scrub of `percent` % checks: each distinct stored block with that probability. */
export function sampleBlocks(entries: BlockRef[], percent: number, seen: Set<BlockId>, random: () => number = Math.random): BlockRef[] {
  const picked: BlockRef[] = [];
  for (const e of entries) {
    if (e.id === null || seen.has(e.id)) continue;
    seen.add(e.id);
    if (percent >= 100 || random() * 100 < percent) picked.push(e);
  }
  return picked;
}

/**
 * What is wrong with a stored object before it is decoded, compared with what its index entry
 * recorded at upload (null: nothing found wrong). `stored`: its size and checksum, null if missing.
 */
export function storedObjectFailure(
  stored: { size: number; checksum: string } | null,
  expected: { storedSize: number; checksum: string } | undefined,
): string | null {
  if (stored === null) return 'Blob not found';
  if (expected && stored.size !== expected.storedSize) return `stored size ${stored.size} differs from the ${expected.storedSize} bytes recorded at upload`;
  if (expected && stored.checksum !== expected.checksum) return 'stored object checksum differs from the one recorded at upload';
  return null;
}

/**
 * Of the blocks a scrub verified, those its verdict names: the ones the index holds invalid, which
 * it makes valid again. A block already valid needs no event; naming every verified block made
 * each scrub's ScrubCompleted (its event, its journal entry, in the cloud its api payload and one
 * index update per block) as large as the version's block list.
 */
export const blocksToRevalidate = (verified: BlockId[], index: ReadonlyMap<BlockId, { valid: boolean }>): BlockId[] =>
  verified.filter((id) => index.get(id)?.valid === false);

/** Other versions a failed block invalidates: the committed ones (backy2 marks them invalid too). */
export const sharesVerdict = (other: Version, scrubbed: Version): boolean => other.uid !== scrubbed.uid && other.status === 'committed';

/**
 * The commands that record a verdict: the scrubbed version's, and for every other version that
 * references failed blocks (`hits`), a partial one naming them.
 */
export function verdictCommands(
  version: Version,
  verified: BlockId[],
  failures: BlockFailure[],
  complete: boolean,
  hits: Map<string, BlockFailure[]>,
): VersionCommand[] {
  const commands: VersionCommand[] = [{ type: 'RecordScrub', uid: version.uid, verified, failed: failures, complete }];
  for (const [uid, failed] of hits) if (failed.length) commands.push({ type: 'RecordScrub', uid, verified: [], failed, complete: false });
  return commands;
}

/**
 * What a scrub found, each block counted once: verified, or failed with its first reason. Sets,
 * not arrays: a 6 TiB device has 1.6 M distinct blocks, and a membership test per block over an
 * array made a full scrub quadratic in them.
 */
export class ScrubTally {
  private readonly verifiedIds = new Set<BlockId>();
  private readonly failedIds = new Map<BlockId, BlockFailure>();

  verified(id: BlockId): void {
    this.verifiedIds.add(id);
  }

  failed(id: BlockId, reason: string): void {
    if (!this.failedIds.has(id)) this.failedIds.set(id, { id, reason });
  }

  /** In the order first found. */
  get verifiedList(): BlockId[] {
    return [...this.verifiedIds];
  }

  get failures(): BlockFailure[] {
    return [...this.failedIds.values()];
  }
}
