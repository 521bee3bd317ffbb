import type { EventOf } from '../domain/events.ts';
import type { VersionCommand } from '../domain/version.ts';
import type { BlockId, StoredBlock, Version } from '../domain/types.ts';
import type { MetadataStore, TouchResult } from './metadata-store.ts';

/** The read side the agent may use directly (cloud: DynamoDB with read-only rights). */
export type MetadataReader = Pick<MetadataStore, 'getVersion' | 'listVersions' | 'getChunk' | 'getBlocks' | 'scanBlocks'>;

/**
 * What the agent needs from a backend. Embedded: in-process calls into shared/app.
 * Cloud: `execute`/`touch` invoke the api function, `record` sends to SQS, reads go to DynamoDB.
 */
export interface Catalog {
  readonly reader: MetadataReader;
  execute(cmd: VersionCommand): Promise<Version>;
  /** Hands a chunk record to the asynchronous path (idempotent; may be delivered twice). */
  record(event: EventOf<'BlocksRecorded'>): Promise<void>;
  /** Resolves once every chunk of the version is projected, so a commit will be accepted. */
  awaitRecorded(uid: string, chunkCount: number): Promise<void>;
  /**
   * Optional: projects the version's last chunk record and commits, in one step (cloud: one api
   * call instead of the queue, the ingest function and a wait). The caller has awaited every other
   * chunk. Without it, the last chunk goes through `record` like the others.
   */
  recordAndCommit?(last: EventOf<'BlocksRecorded'>, cmd: Extract<VersionCommand, { type: 'CommitVersion' }>): Promise<Version>;
  /**
   * Optional, with `recordAndCommit`: readies the last chunk record ahead of the commit (cloud:
   * journals it while the manifest is written); the answer is the record to commit with.
   */
  prepareLast?(last: EventOf<'BlocksRecorded'>): Promise<EventOf<'BlocksRecorded'>>;
  /** Tells the index that a backup relies on already-stored objects (docs/DESIGN-NOTES.md, GC invariant step 3). */
  touch(blocks: StoredBlock[]): Promise<Map<BlockId, TouchResult>>;
  /**
   * Pins a version while it is served (`backy2 nbd`): creates or renews the lease; cloud: through
   * the api function. Both backends have it; test doubles may not.
   */
  holdLease?(uid: string, holder: string, seconds: number): Promise<void>;
  dropLease?(uid: string, holder: string): Promise<void>;
  close(): Promise<void>;
}
