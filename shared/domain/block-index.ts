import type { DomainEvent } from './events.ts';
import type { BlockId, BlockIndexEntry, StoredBlock, Version } from './types.ts';

/**
 * The rules of the block index, pure: for every change an event makes to one entry, what the entry
 * must be for the change to apply (`requires`) and what it then sets (`sets`). A change whose guard does
 * not hold changes nothing. Both stores translate this table (SQL WHERE/SET in sqlite-store.ts,
 * DynamoDB ConditionExpression/UpdateExpression in dynamo-store.ts), one conditional write per
 * entry; `evolveEntry` interprets it, and the contract suite checks the three agree.
 *
 * Re-marking keeps the first mark. `unreferencedSince` means "continuously unreferenced since":
 * the grace period and the cutoff at the oldest backup in progress are measured from it. A second
 * mark of a marked entry only comes from a cleanup that read the index before the first mark was
 * written (an overlapping run) and knows nothing newer; overwriting would let overlapping runs
 * postpone a deletion forever and make the first run's claim, conditional on its own mark, fail.
 * Keeping the first also makes a repeated mark a no-op. Safe: a touch clears the mark (and a
 * later mark starts a new period), and no lookup after the first mark finds the entry live.
 */
export interface Guard {
  /** true: the entry must exist; false: it must not; absent: either (an upsert). */
  exists?: boolean;
  /** Required value of `deleting` (of an existing entry). */
  deleting?: boolean;
  /** 'none': not marked; 'seen': marked, and exactly at the time the change names, if it names one. */
  mark?: 'none' | 'seen';
}

export interface Effect {
  /** The entry goes. */
  remove?: true;
  /** storedSize and checksum become the change's block's. */
  stored?: true;
  /** unreferencedSince becomes the change's time ('at') or null ('clear'). */
  mark?: 'at' | 'clear';
  deleting?: boolean;
  valid?: boolean;
}

export interface Rule {
  requires: Guard;
  sets: Effect;
}

/** One change to one entry, as an event makes it. */
export type BlockIndexChange =
  /** Uploaded by a backup in progress: live and valid, whatever the entry was. */
  | { kind: 'recorded'; id: BlockId; block: StoredBlock; at: string }
  /** A touch found no entry for an object that exists. */
  | { kind: 'created'; id: BlockId; block: StoredBlock; at: string }
  /** Cleanup phase 1 found no reference. */
  | { kind: 'marked'; id: BlockId; at: string }
  /** A reference again (a touch, or cleanup phase 1 finding one). */
  | { kind: 'referenced'; id: BlockId }
  /** Cleanup phase 2, conditional on the mark it planned with (absent when replaying the log). */
  | { kind: 'claimed'; id: BlockId; markedAt?: string }
  /** The object is gone. */
  | { kind: 'deleted'; id: BlockId }
  /** `rekey` re-encrypted the object (same id). */
  | { kind: 'rekeyed'; id: BlockId; block: StoredBlock }
  /** A scrub's verdict. */
  | { kind: 'verified'; id: BlockId }
  | { kind: 'invalidated'; id: BlockId };

export type ChangeKind = BlockIndexChange['kind'];

export const blockIndexRules: Record<ChangeKind, Rule> = {
  // A new upload replaces an object a scrub found invalid, and revives an entry a cleanup claimed:
  // that cleanup already deleted the old object, or the upload (If-None-Match) would have failed.
  recorded: { requires: {}, sets: { stored: true, mark: 'clear', deleting: false, valid: true } },
  created: { requires: { exists: false }, sets: { stored: true } },
  // Keep the first mark (see above).
  marked: { requires: { exists: true, deleting: false, mark: 'none' }, sets: { mark: 'at' } },
  // An entry being deleted stays so: its object may be gone already.
  referenced: { requires: { exists: true, deleting: false }, sets: { mark: 'clear' } },
  claimed: { requires: { exists: true, deleting: false, mark: 'seen' }, sets: { deleting: true } },
  // Only a claimed entry goes: a revived one (recorded anew since the claim) stays.
  deleted: { requires: { exists: true, deleting: true }, sets: { remove: true } },
  // An entry claimed for deletion must never be made to describe an object as live again.
  rekeyed: { requires: { exists: true, deleting: false }, sets: { stored: true } },
  verified: { requires: { exists: true }, sets: { valid: true } },
  invalidated: { requires: { exists: true }, sets: { valid: false } },
};

/** The block a change brings (if it can create an entry or sets size and checksum). */
export const blockOf = (c: BlockIndexChange): StoredBlock | undefined => ('block' in c ? c.block : undefined);
/** The time a change writes (createdAt of a new entry, or the mark). */
export const timeOf = (c: BlockIndexChange): string | undefined => ('at' in c ? c.at : undefined);
/** The mark a claim was planned with. */
export const expectedMarkOf = (c: BlockIndexChange): string | undefined => (c.kind === 'claimed' ? c.markedAt : undefined);

/** A new entry: unmarked, not being deleted, valid. */
export const newEntry = (block: StoredBlock, at: string): BlockIndexEntry => ({
  id: block.id,
  storedSize: block.storedSize,
  checksum: block.checksum,
  createdAt: at,
  unreferencedSince: null,
  deleting: false,
  valid: true,
});

/** Whether the change applies to the entry as it is. */
export function admits(entry: BlockIndexEntry | undefined, change: BlockIndexChange): boolean {
  const requires = blockIndexRules[change.kind].requires;
  if (requires.exists !== undefined && requires.exists !== (entry !== undefined)) return false;
  if (entry === undefined) return blockOf(change) !== undefined;
  if (requires.deleting !== undefined && entry.deleting !== requires.deleting) return false;
  if (requires.mark === 'none' && entry.unreferencedSince !== null) return false;
  if (requires.mark === 'seen') {
    const expected = expectedMarkOf(change);
    if (entry.unreferencedSince === null || (expected !== undefined && entry.unreferencedSince !== expected)) return false;
  }
  return true;
}

/** The entry after the change (undefined: there is none). */
export function evolveEntry(entry: BlockIndexEntry | undefined, change: BlockIndexChange): BlockIndexEntry | undefined {
  if (!admits(entry, change)) return entry;
  const sets = blockIndexRules[change.kind].sets;
  if (sets.remove) return undefined;
  const block = blockOf(change);
  const next = { ...(entry ?? newEntry(block!, timeOf(change)!)) };
  if (sets.stored && block) Object.assign(next, { storedSize: block.storedSize, checksum: block.checksum });
  if (sets.mark === 'at') next.unreferencedSince = timeOf(change)!;
  if (sets.mark === 'clear') next.unreferencedSince = null;
  if (sets.deleting !== undefined) next.deleting = sets.deleting;
  if (sets.valid !== undefined) next.valid = sets.valid;
  return next;
}

/**
 * Only a backup in progress vouches for its uploads: the late record of one removed or failed may
 * arrive after a cleanup deleted its objects, and must not make them look live (DESIGN-NOTES 6).
 */
export const vouchesForUploads = (recorder: Version | undefined): boolean => recorder?.status === 'pending';

/**
 * The changes an event makes to the index, in the order they apply. `recorderPending`: the version
 * that recorded a BlocksRecorded was in progress when it was projected (see vouchesForUploads).
 */
export function changesOf(event: DomainEvent, recorderPending = false): BlockIndexChange[] {
  switch (event.type) {
    case 'BlocksRecorded':
      return recorderPending ? event.newBlocks.map((block) => ({ kind: 'recorded', id: block.id, block, at: event.at })) : [];
    case 'BlocksMarkedUnreferenced':
      return event.ids.map((id) => ({ kind: 'marked', id, at: event.at }));
    case 'BlocksReferenced':
      return [
        ...event.ids.map((id): BlockIndexChange => ({ kind: 'referenced', id })),
        ...event.created.map((block): BlockIndexChange => ({ kind: 'created', id: block.id, block, at: event.at })),
      ];
    case 'BlocksDeletionClaimed':
      return event.ids.map((id) => ({ kind: 'claimed', id }));
    case 'BlocksDeleted':
      return event.ids.map((id) => ({ kind: 'deleted', id }));
    case 'BlocksRekeyed':
      return event.blocks.map((block) => ({ kind: 'rekeyed', id: block.id, block }));
    case 'ScrubCompleted':
      return [
        ...event.verified.map((id): BlockIndexChange => ({ kind: 'verified', id })),
        ...event.failed.map((f): BlockIndexChange => ({ kind: 'invalidated', id: f.id })),
      ];
    default:
      return [];
  }
}

export type BlockIndex = ReadonlyMap<BlockId, BlockIndexEntry>;

/** Folds one event into the index. */
export function evolveBlockIndex(index: BlockIndex, event: DomainEvent, recorderPending = false): BlockIndex {
  const changes = changesOf(event, recorderPending);
  if (!changes.length) return index;
  const next = new Map(index);
  for (const change of changes) {
    const entry = evolveEntry(next.get(change.id), change);
    if (entry) next.set(change.id, entry);
    else next.delete(change.id);
  }
  return next;
}

/** An entry a backup may dedup against: stored, valid, not marked unreferenced, not being deleted. */
export const isLive = (e: BlockIndexEntry | undefined): boolean => e !== undefined && e.valid && !e.deleting && e.unreferencedSince === null;

/** What a backup's touch of an object that exists finds in the index (DESIGN-NOTES 3). */
export type TouchResult = 'live' | 'deleting' | 'created';

export const touchFinds = (e: BlockIndexEntry | undefined): TouchResult => (e === undefined ? 'created' : e.deleting ? 'deleting' : 'live');

/** The change a touch makes: a live entry is referenced again, a missing one created; one being deleted is left alone. */
export function touchChange(found: TouchResult, block: StoredBlock, at: string): BlockIndexChange | undefined {
  if (found === 'live') return { kind: 'referenced', id: block.id };
  if (found === 'created') return { kind: 'created', id: block.id, block, at };
  return undefined;
}

/**
 * A touch as conditional writes, without reading first: the first attempt that applies says what
 * the touch found; when none applies, the entry exists and is being deleted.
 */
export const touchAttempts = (block: StoredBlock, at: string): { finds: TouchResult; change: BlockIndexChange }[] =>
  (['live', 'created'] as const).map((finds) => ({ finds, change: touchChange(finds, block, at)! }));
