import * as v from 'valibot';
import { blockId, instant, label, nonNegativeInt, num, parse, positiveInt, sha256Hex, tags, uid, variant } from './schema.ts';

/**
 * The event log is the source of truth; every event is validated with these schemas
 * whenever it crosses a boundary (SQLite row, DynamoDB item, SQS message, Lambda payload).
 * `v` is the schema version of the event type, so old logs stay readable.
 */

export const StoredBlockSchema = v.object({
  id: blockId,
  storedSize: nonNegativeInt(),
  checksum: sha256Hex,
});

export const VersionStatsSchema = v.object({
  bytesRead: v.pipe(num(), v.minValue(0)),
  bytesWritten: v.pipe(num(), v.minValue(0)),
  blocksWritten: nonNegativeInt(),
  blocksDedup: nonNegativeInt(),
  blocksSparse: nonNegativeInt(),
  durationSeconds: v.pipe(num(), v.minValue(0)),
});

export const VersionStarted = v.object({
  type: v.literal('VersionStarted'),
  v: v.literal(1),
  uid,
  name: label,
  snapshotName: v.pipe(v.string(), v.maxLength(255)),
  sizeBytes: nonNegativeInt(),
  blockSize: positiveInt(),
  chunkEntries: positiveInt(),
  baseUid: v.nullable(uid),
  tags,
  expire: v.nullable(instant),
  host: v.string(),
  at: instant,
});

/**
 * One chunk of a version's block map. `entries` is the packed chunk (base64, see blockmap.ts);
 * `sameAs` instead points at an identical chunk of an older version, so an unchanged
 * incremental backup writes almost no metadata.
 */
export const BlocksRecorded = v.object({
  type: v.literal('BlocksRecorded'),
  v: v.literal(1),
  uid,
  chunk: nonNegativeInt(),
  entries: v.nullable(v.string()),
  sameAs: v.nullable(v.object({ uid, chunk: nonNegativeInt() })),
  newBlocks: v.array(StoredBlockSchema),
  at: instant,
});

export const VersionCommitted = v.object({
  type: v.literal('VersionCommitted'),
  v: v.literal(1),
  uid,
  stats: VersionStatsSchema,
  at: instant,
});
/**
 * `import`: a version exported from another repository (or this one) starts pending here. It keeps
 * its original `date` and header; `at` is when this import run started (the version's startedAt).
 */
export const VersionImported = v.object({ ...VersionStarted.entries, type: v.literal('VersionImported'), date: instant });
/** `backup -c`: work on an interrupted (pending or failed) version starts again on `host`. */
export const VersionResumed = v.object({ type: v.literal('VersionResumed'), v: v.literal(1), uid, host: v.string(), at: instant });
export const VersionFailed = v.object({ type: v.literal('VersionFailed'), v: v.literal(1), uid, reason: v.string(), at: instant });
export const VersionRemoved = v.object({ type: v.literal('VersionRemoved'), v: v.literal(1), uid, forced: v.boolean(), at: instant });
export const VersionProtected = v.object({ type: v.literal('VersionProtected'), v: v.literal(1), uid, at: instant });
export const VersionUnprotected = v.object({ type: v.literal('VersionUnprotected'), v: v.literal(1), uid, at: instant });
export const TagsAdded = v.object({ type: v.literal('TagsAdded'), v: v.literal(1), uid, tags, at: instant });
export const TagsRemoved = v.object({ type: v.literal('TagsRemoved'), v: v.literal(1), uid, tags, at: instant });
export const ExpirySet = v.object({ type: v.literal('ExpirySet'), v: v.literal(1), uid, expire: v.nullable(instant), at: instant });

/**
 * Result of a scrub of one version: which blocks failed, and why; `verified` names only the blocks
 * it found fine that the index held invalid (made valid again), not every block it checked.
 */
export const ScrubCompleted = v.object({
  type: v.literal('ScrubCompleted'),
  v: v.literal(1),
  uid,
  verified: v.array(blockId),
  failed: v.array(v.object({ id: blockId, reason: v.string() })),
  complete: v.boolean(),
  at: instant,
});

/** Block-index events (stream `blocks`). */
export const BlocksMarkedUnreferenced = v.object({ type: v.literal('BlocksMarkedUnreferenced'), v: v.literal(1), ids: v.array(blockId), at: instant });
/** Touched by a backup that found the object already stored: unmarked, or re-indexed (`created`). */
export const BlocksReferenced = v.object({
  type: v.literal('BlocksReferenced'),
  v: v.literal(1),
  ids: v.array(blockId),
  created: v.array(StoredBlockSchema),
  at: instant,
});
export const BlocksDeletionClaimed = v.object({ type: v.literal('BlocksDeletionClaimed'), v: v.literal(1), ids: v.array(blockId), at: instant });
export const BlocksDeleted = v.object({ type: v.literal('BlocksDeleted'), v: v.literal(1), ids: v.array(blockId), at: instant });
/** `rekey` re-encrypted these blocks' objects under the current key (same ids): their new size and checksum. */
export const BlocksRekeyed = v.object({ type: v.literal('BlocksRekeyed'), v: v.literal(1), blocks: v.array(StoredBlockSchema), at: instant });

export const DomainEventSchema = variant('type', [
  VersionStarted,
  VersionImported,
  BlocksRecorded,
  VersionCommitted,
  VersionFailed,
  VersionResumed,
  VersionRemoved,
  VersionProtected,
  VersionUnprotected,
  TagsAdded,
  TagsRemoved,
  ExpirySet,
  ScrubCompleted,
  BlocksMarkedUnreferenced,
  BlocksReferenced,
  BlocksDeletionClaimed,
  BlocksDeleted,
  BlocksRekeyed,
]);

export type DomainEvent = v.InferOutput<typeof DomainEventSchema>;
export type EventOf<T extends DomainEvent['type']> = Extract<DomainEvent, { type: T }>;
export type VersionEvent = Exclude<
  DomainEvent,
  { type: 'BlocksRecorded' | 'BlocksMarkedUnreferenced' | 'BlocksReferenced' | 'BlocksDeletionClaimed' | 'BlocksDeleted' | 'BlocksRekeyed' }
>;

export const parseEvent = (raw: unknown): DomainEvent => parse(DomainEventSchema, raw);

/** Stream names: lifecycle events per version, block records per version (seq = chunk), block index events. */
export const streams = {
  version: (uid: string) => `version-${uid}`,
  blockRecords: (uid: string) => `blocks-${uid}`,
  blockIndex: 'block-index',
} as const;
