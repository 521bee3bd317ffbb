import type { TouchResult } from '../domain/block-index.ts';
import type { DomainEvent, EventOf, VersionEvent } from '../domain/events.ts';
import type { BlockId, BlockIndexEntry, StoredBlock, Version } from '../domain/types.ts';
import type { VersionLease } from '../domain/cleanup.ts';

export class ConcurrencyError extends Error {}

/** A stored block-map chunk: packed entries, or a reference to an identical older chunk. */
export interface StoredChunk {
  entries: Buffer | null;
  sameAs: { uid: string; chunk: number } | null;
}

export type { TouchResult } from '../domain/block-index.ts';

/**
 * The persistence port both backends implement (SQLite embedded, DynamoDB in the cloud).
 * Every method is a storage primitive; the rules that sequence them live in shared/app.
 * Block-index writes translate the rules of shared/domain/block-index.ts.
 * Every write appends the event and updates its projection atomically.
 */
export interface MetadataStore {
  /**
   * Appends lifecycle events to the version's stream if its seq is still `expectedSeq` (0 = new) and stores `next`.
   * A ScrubCompleted also sets the validity of the blocks it names in the index.
   */
  appendVersionEvents(expectedSeq: number, events: VersionEvent[], next: Version): Promise<void>;
  /**
   * Idempotently records one block-map chunk: stores the index entries of its new blocks (if absent),
   * the chunk, the event, and increments the version's recorded-chunk count. Returns false for a duplicate.
   */
  recordChunk(event: EventOf<'BlocksRecorded'>): Promise<boolean>;
  /** Block index events, applied to the index entries they name under the conditions of cleanup. */
  markUnreferenced(ids: BlockId[], at: string): Promise<void>;
  unmark(ids: BlockId[], at: string): Promise<void>;
  /** Claims each id for deletion only if it is still marked with exactly that time; returns the claimed ids. */
  claimForDeletion(marks: { id: BlockId; markedAt: string }[], at: string): Promise<BlockId[]>;
  removeBlocks(ids: BlockId[], at: string): Promise<void>;
  /**
   * Key rotation: the objects of these blocks were re-encrypted (same ids); sets their stored size
   * and checksum. Entries claimed for deletion, or gone, are left alone.
   */
  rekeyBlocks(blocks: StoredBlock[], at: string): Promise<void>;
  /** Unmarks live entries, creates missing ones, reports those being deleted. */
  touchBlocks(blocks: StoredBlock[], at: string): Promise<Map<BlockId, TouchResult>>;

  getVersion(uid: string): Promise<Version | undefined>;
  listVersions(): Promise<Version[]>;
  getChunk(uid: string, chunk: number): Promise<StoredChunk | undefined>;
  getBlocks(ids: BlockId[]): Promise<Map<BlockId, BlockIndexEntry>>;
  scanBlocks(): AsyncIterable<BlockIndexEntry[]>;

  /**
   * Served-version leases (`backy2 nbd`, see VersionLease). Not events: a lease is a short-lived
   * claim that expires by itself, like a lock, and means nothing after a rebuild.
   * `putLease` creates or renews the lease of (uid, holder).
   */
  putLease(lease: VersionLease): Promise<void>;
  dropLease(uid: string, holder: string): Promise<void>;
  listLeases(): Promise<VersionLease[]>;

  /** The whole event log in append order (for rebuilding projections). */
  readAllEvents(): AsyncIterable<DomainEvent>;
}
