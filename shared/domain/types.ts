/** Names of the domain. Plain strings at runtime; the aliases say what a value means. */
export type VersionUid = string;
/** Hex HMAC-SHA256 of the block's plaintext under the dedup key. */
export type BlockId = string;

/** One block of a version: `id === null` means sparse (all zeros, never stored). */
export interface BlockRef {
  idx: number;
  id: BlockId | null;
  length: number;
}

/** What the agent tells the index about a block it uploaded (the stored object's size and checksum). */
export interface StoredBlock {
  id: BlockId;
  storedSize: number;
  /** sha256 hex of the stored object, so a scrub without the key can verify the ciphertext. */
  checksum: string;
}

export type VersionStatus = 'pending' | 'committed' | 'failed' | 'removed';

export interface VersionStats {
  bytesRead: number;
  bytesWritten: number;
  blocksWritten: number;
  blocksDedup: number;
  blocksSparse: number;
  durationSeconds: number;
}

/** The version projection: what `ls` shows and what commands decide against. */
export interface Version {
  uid: VersionUid;
  name: string;
  snapshotName: string;
  date: string; // ISO instant the backup started
  /**
   * When the current run of work on this version started: the backup's start, or a `backup -c`
   * resume, or an import. The max-backup-age and cleanup's "in progress" rules use this, not `date`.
   * Absent in projections written before it existed (then `date`).
   */
  startedAt?: string;
  sizeBytes: number;
  blockSize: number;
  blockCount: number;
  chunkCount: number;
  chunkEntries: number;
  recordedChunks: number;
  baseUid: VersionUid | null;
  host: string;
  status: VersionStatus;
  valid: boolean;
  protected: boolean;
  tags: string[];
  expire: string | null; // ISO instant or null
  stats: VersionStats | null;
  /** Sequence number of the last lifecycle event applied: the optimistic-concurrency token. */
  seq: number;
}

/** The block index projection. */
export interface BlockIndexEntry {
  id: BlockId;
  storedSize: number;
  checksum: string;
  createdAt: string;
  /** When cleanup phase 1 found no reference; null while referenced. */
  unreferencedSince: string | null;
  /** Cleanup phase 2 claimed it; the object may already be gone. */
  deleting: boolean;
  valid: boolean;
}
