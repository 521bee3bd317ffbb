import { z } from 'zod';
import { blockId, instant, label, sha256Hex, tags, uid } from './schema.ts';

/**
 * The event log is the source of truth; every event is validated with these schemas
 * whenever it crosses a boundary (SQLite row, DynamoDB item, SQS message, Lambda payload).
 * `v` is the schema version of the event type, so old logs stay readable.
 */

export const StoredBlockSchema = z.object({
  id: blockId,
  storedSize: z.number().int().nonnegative(),
  checksum: sha256Hex,
});

export const VersionStatsSchema = z.object({
  bytesRead: z.number().nonnegative(),
  bytesWritten: z.number().nonnegative(),
  blocksWritten: z.number().int().nonnegative(),
  blocksDedup: z.number().int().nonnegative(),
  blocksSparse: z.number().int().nonnegative(),
  durationSeconds: z.number().nonnegative(),
});

export const VersionStarted = z.object({
  type: z.literal('VersionStarted'),
  v: z.literal(1),
  uid,
  name: label,
  snapshotName: z.string().max(255),
  sizeBytes: z.number().int().nonnegative(),
  blockSize: z.number().int().positive(),
  chunkEntries: z.number().int().positive(),
  baseUid: uid.nullable(),
  tags,
  expire: instant.nullable(),
  host: z.string(),
  at: instant,
});

/**
 * One chunk of a version's block map. `entries` is the packed chunk (base64, see blockmap.ts);
 * `sameAs` instead points at an identical chunk of an older version, so an unchanged
 * incremental backup writes almost no metadata.
 */
export const BlocksRecorded = z.object({
  type: z.literal('BlocksRecorded'),
  v: z.literal(1),
  uid,
  chunk: z.number().int().nonnegative(),
  entries: z.string().nullable(),
  sameAs: z.object({ uid, chunk: z.number().int().nonnegative() }).nullable(),
  newBlocks: z.array(StoredBlockSchema),
  at: instant,
});

export const VersionCommitted = z.object({
  type: z.literal('VersionCommitted'),
  v: z.literal(1),
  uid,
  stats: VersionStatsSchema,
  at: instant,
});
/**
 * `import`: a version exported from another repository (or this one) starts pending here. It keeps
 * its original `date` and header; `at` is when this import run started (the version's startedAt).
 */
export const VersionImported = VersionStarted.extend({ type: z.literal('VersionImported'), date: instant });
/** `backup -c`: work on an interrupted (pending or failed) version starts again on `host`. */
export const VersionResumed = z.object({ type: z.literal('VersionResumed'), v: z.literal(1), uid, host: z.string(), at: instant });
export const VersionFailed = z.object({ type: z.literal('VersionFailed'), v: z.literal(1), uid, reason: z.string(), at: instant });
export const VersionRemoved = z.object({ type: z.literal('VersionRemoved'), v: z.literal(1), uid, forced: z.boolean(), at: instant });
export const VersionProtected = z.object({ type: z.literal('VersionProtected'), v: z.literal(1), uid, at: instant });
export const VersionUnprotected = z.object({ type: z.literal('VersionUnprotected'), v: z.literal(1), uid, at: instant });
export const TagsAdded = z.object({ type: z.literal('TagsAdded'), v: z.literal(1), uid, tags, at: instant });
export const TagsRemoved = z.object({ type: z.literal('TagsRemoved'), v: z.literal(1), uid, tags, at: instant });
export const ExpirySet = z.object({ type: z.literal('ExpirySet'), v: z.literal(1), uid, expire: instant.nullable(), at: instant });

/**
 * Result of a scrub of one version: which blocks failed, and why; `verified` names only the blocks
 * it found fine that the index held invalid (made valid again), not every block it checked.
 */
export const ScrubCompleted = z.object({
  type: z.literal('ScrubCompleted'),
  v: z.literal(1),
  uid,
  verified: z.array(blockId),
  failed: z.array(z.object({ id: blockId, reason: z.string() })),
  complete: z.boolean(),
  at: instant,
});

/** Block-index events (stream `blocks`). */
export const BlocksMarkedUnreferenced = z.object({ type: z.literal('BlocksMarkedUnreferenced'), v: z.literal(1), ids: z.array(blockId), at: instant });
/** Touched by a backup that found the object already stored: unmarked, or re-indexed (`created`). */
export const BlocksReferenced = z.object({
  type: z.literal('BlocksReferenced'),
  v: z.literal(1),
  ids: z.array(blockId),
  created: z.array(StoredBlockSchema),
  at: instant,
});
export const BlocksDeletionClaimed = z.object({ type: z.literal('BlocksDeletionClaimed'), v: z.literal(1), ids: z.array(blockId), at: instant });
export const BlocksDeleted = z.object({ type: z.literal('BlocksDeleted'), v: z.literal(1), ids: z.array(blockId), at: instant });
/** `rekey` re-encrypted these blocks' objects under the current key (same ids): their new size and checksum. */
export const BlocksRekeyed = z.object({ type: z.literal('BlocksRekeyed'), v: z.literal(1), blocks: z.array(StoredBlockSchema), at: instant });

export const DomainEventSchema = z.discriminatedUnion('type', [
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

export type DomainEvent = z.infer<typeof DomainEventSchema>;
export type EventOf<T extends DomainEvent['type']> = Extract<DomainEvent, { type: T }>;
export type VersionEvent = Exclude<
  DomainEvent,
  { type: 'BlocksRecorded' | 'BlocksMarkedUnreferenced' | 'BlocksReferenced' | 'BlocksDeletionClaimed' | 'BlocksDeleted' | 'BlocksRekeyed' }
>;

export const parseEvent = (raw: unknown): DomainEvent => DomainEventSchema.parse(raw);

/** Stream names: lifecycle events per version, block records per version (seq = chunk), block index events. */
export const streams = {
  version: (uid: string) => `version-${uid}`,
  blockRecords: (uid: string) => `blocks-${uid}`,
  blockIndex: 'block-index',
} as const;
