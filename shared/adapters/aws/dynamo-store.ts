import {
  BatchGetCommand,
  DeleteCommand,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  TransactWriteCommand,
  UpdateCommand,
  type BatchGetCommandOutput,
  type DynamoDBDocumentClient,
} from '@aws-sdk/lib-dynamodb';
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Backy2Error, ExitCode } from '../../domain/errors.ts';
import { parseEvent, streams, type DomainEvent, type EventOf, type VersionEvent } from '../../domain/events.ts';
import type { BlockId, BlockIndexEntry, StoredBlock, Version } from '../../domain/types.ts';
import { changesOf, touchAttempts, touchFinds, vouchesForUploads, type BlockIndexChange, type TouchResult } from '../../domain/block-index.ts';
import { ConcurrencyError, type MetadataStore, type StoredChunk } from '../../ports/metadata-store.ts';
import { blockIndexWrite } from './block-index-dynamo.ts';
import type { VersionLease } from '../../domain/cleanup.ts';

/**
 * The cloud metadata store. EventsTable (stream, seq) is the log; ProjectionsTable holds:
 *   versions      pk "VERSION"          sk uid        data (JSON), seq, recordedChunks (ADD-ed by ingest)
 *   block maps    pk "MAP#<uid>"        sk chunk (8 digits)  entries (binary, 36 bytes per block) | sameUid/sameChunk
 *   block index   pk "BLOCK#<id[0:2]>"  sk id         storedSize, checksum, createdAt, unreferencedSince, deleting, valid
 *   leases        pk "LEASE"            sk uid#holder uid, holder, expiresAt (versions served by `backy2 nbd`)
 * Block maps are chunks of ~1000 blocks, so metadata cost follows the data written, not the device size.
 */
const VERSION_PK = 'VERSION';
const LEASE_PK = 'LEASE';
const mapPk = (uid: string) => `MAP#${uid}`;
const chunkSk = (chunk: number) => String(chunk).padStart(8, '0');
const blockKey = (id: BlockId) => ({ pk: `BLOCK#${id.slice(0, 2)}`, sk: id });
const SHARDS = Array.from({ length: 256 }, (_, i) => `BLOCK#${i.toString(16).padStart(2, '0')}`);

/** Block-index requests of one chunk record in flight at once (the ingest function's share of the table's throughput). */
const INDEX_WRITES = 16;
/** Changes per TransactWriteItems (DynamoDB's limit): a chunk's new blocks in a few requests, not one each. */
const INDEX_BATCH = 100;
/** Attempts of a single index write that met a transaction in flight on its entry. */
const CONFLICT_ATTEMPTS = 5;

/** Waits for both, then fails with the first failure (none is left running unobserved). */
async function settledBoth(a: Promise<unknown>, b: Promise<unknown>): Promise<void> {
  const results = await Promise.allSettled([a, b]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

const isConditionFailure = (e: unknown) => (e as { name?: string }).name === 'ConditionalCheckFailedException';
const isCancelledByCondition = (e: unknown) =>
  (e as { name?: string }).name === 'TransactionCanceledException' &&
  ((e as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? []).some((r) => r.Code === 'ConditionalCheckFailed');

export interface DynamoTables {
  eventsTable: string;
  projectionsTable: string;
}

export class DynamoMetadataStore implements MetadataStore {
  private readonly db: DynamoDBDocumentClient;
  private readonly events: string;
  private readonly projections: string;

  constructor(db: DynamoDBDocumentClient, tables: DynamoTables) {
    this.db = db;
    this.events = tables.eventsTable;
    this.projections = tables.projectionsTable;
  }

  private eventItem(stream: string, seq: number, event: DomainEvent) {
    return { stream, seq, type: event.type, at: event.at, data: JSON.stringify(event) };
  }

  /** Block-index events get a time-ordered, collision-checked sequence number. */
  private async appendToBlockIndex(event: DomainEvent): Promise<void> {
    for (;;) {
      const seq = Date.now() * 1000 + randomInt(1000);
      try {
        await this.db.send(
          new PutCommand({ TableName: this.events, Item: this.eventItem(streams.blockIndex, seq, event), ConditionExpression: 'attribute_not_exists(seq)' }),
        );
        return;
      } catch (e) {
        if (!isConditionFailure(e)) throw e;
      }
    }
  }

  async appendVersionEvents(expectedSeq: number, events: VersionEvent[], next: Version): Promise<void> {
    const { recordedChunks: _ignored, ...data } = next;
    const items = events.map((event, i) => ({
      Put: {
        TableName: this.events,
        Item: this.eventItem(streams.version(next.uid), expectedSeq + i + 1, event),
        ConditionExpression: 'attribute_not_exists(seq)',
      },
    }));
    try {
      await this.db.send(
        new TransactWriteCommand({
          TransactItems: [
            ...items,
            {
              Update: {
                TableName: this.projections,
                Key: { pk: VERSION_PK, sk: next.uid },
                UpdateExpression: 'SET #data = :data, #seq = :seq, recordedChunks = if_not_exists(recordedChunks, :zero)',
                ConditionExpression: expectedSeq === 0 ? 'attribute_not_exists(#seq)' : '#seq = :expected',
                ExpressionAttributeNames: { '#data': 'data', '#seq': 'seq' },
                ExpressionAttributeValues: {
                  ':data': JSON.stringify(data),
                  ':seq': next.seq,
                  ':zero': 0,
                  ...(expectedSeq === 0 ? {} : { ':expected': expectedSeq }),
                },
              },
            },
          ],
        }),
      );
    } catch (e) {
      if (isCancelledByCondition(e)) throw new ConcurrencyError(`version ${next.uid} changed concurrently`);
      throw e;
    }
    for (const event of events) if (event.type === 'ScrubCompleted') await this.applyScrubToBlocks(event);
  }

  private async applyScrubToBlocks(event: EventOf<'ScrubCompleted'>): Promise<void> {
    for (const change of changesOf(event)) await this.applyChange(change);
  }

  async recordChunk(event: EventOf<'BlocksRecorded'>): Promise<boolean> {
    // 1. index entries of new blocks (idempotent; a new upload also revives a claimed entry,
    //    whose old object the claiming cleanup has already deleted),
    //    but only while the backup is in progress: the late record of a removed or failed one may
    //    arrive after a cleanup deleted its objects, and must not make them look live,
    // 2. the chunk itself (idempotent), written meanwhile: neither needs the other;
    const indexed = event.newBlocks.length
      ? this.getVersion(event.uid).then((v) => this.applyChanges(changesOf(event, vouchesForUploads(v))))
      : Promise.resolve();
    const chunk = this.db.send(
      new PutCommand({
        TableName: this.projections,
        Item: {
          pk: mapPk(event.uid),
          sk: chunkSk(event.chunk),
          ...(event.entries !== null ? { entries: Buffer.from(event.entries, 'base64') } : {}),
          ...(event.sameAs ? { sameUid: event.sameAs.uid, sameChunk: event.sameAs.chunk } : {}),
        },
      }),
    );
    await settledBoth(indexed, chunk);
    // 3. once both are durable, the event and the count, together: a duplicate delivery fails the condition and changes nothing.
    try {
      await this.db.send(
        new TransactWriteCommand({
          TransactItems: [
            {
              Put: {
                TableName: this.events,
                Item: this.eventItem(streams.blockRecords(event.uid), event.chunk, event),
                ConditionExpression: 'attribute_not_exists(seq)',
              },
            },
            {
              Update: {
                TableName: this.projections,
                Key: { pk: VERSION_PK, sk: event.uid },
                UpdateExpression: 'ADD recordedChunks :one',
                ConditionExpression: 'attribute_exists(#seq)',
                ExpressionAttributeNames: { '#seq': 'seq' },
                ExpressionAttributeValues: { ':one': 1 },
              },
            },
          ],
        }),
      );
      return true;
    } catch (e) {
      if (!isCancelledByCondition(e)) throw e;
      const reasons = (e as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? [];
      if (reasons[0]?.Code === 'ConditionalCheckFailed') return false;
      throw new Error(`Block records for unknown version ${event.uid}`);
    }
  }

  /** The conditional write of one change, translated from the block-index rules. */
  private indexWrite(change: BlockIndexChange) {
    const write = blockIndexWrite(change);
    const common = {
      TableName: this.projections,
      Key: blockKey(change.id),
      ...(write.ConditionExpression ? { ConditionExpression: write.ConditionExpression } : {}),
      ...(Object.keys(write.ExpressionAttributeValues).length ? { ExpressionAttributeValues: write.ExpressionAttributeValues } : {}),
    };
    if (write.kind === 'delete') return { Delete: common, Update: undefined };
    return { Delete: undefined, Update: { ...common, UpdateExpression: write.UpdateExpression! } };
  }

  /**
   * One conditional write per change; says whether it applied. A write that meets another
   * request's transaction on the same entry is tried again (the SDK does not retry those); one
   * that keeps meeting them fails as a throttled request does (exit 9: run the command again).
   */
  private async applyChange(change: BlockIndexChange): Promise<boolean> {
    const write = this.indexWrite(change);
    for (let attempt = 1; ; attempt++) {
      try {
        if (write.Delete) await this.db.send(new DeleteCommand(write.Delete));
        else await this.db.send(new UpdateCommand(write.Update!));
        return true;
      } catch (e) {
        if (isConditionFailure(e)) return false;
        if ((e as { name?: string }).name !== 'TransactionConflictException') throw e;
        if (attempt === CONFLICT_ATTEMPTS)
          throw new Backy2Error(
            ExitCode.cloud,
            `DynamoDB table ${this.projections}: block-index entry ${change.id} was held by other transactions through ${CONFLICT_ATTEMPTS} attempts (TransactionConflictException); run the command again`,
          );
        await sleep(randomInt(10, 50) * attempt);
      }
    }
  }

  /**
   * Changes of different blocks in one transaction (each keeps its condition): all apply, or, when
   * the transaction is cancelled (a condition, or another request on one of the entries), each is
   * written alone, and applies exactly when its own condition holds.
   */
  private async applyTogether(changes: BlockIndexChange[]): Promise<void> {
    if (changes.length > 1)
      try {
        const items = changes.map((change) => this.indexWrite(change)).map((write) => (write.Delete ? { Delete: write.Delete } : { Update: write.Update! }));
        await this.db.send(new TransactWriteCommand({ TransactItems: items }));
        return;
      } catch (e) {
        if ((e as { name?: string }).name !== 'TransactionCanceledException') throw e;
      }
    for (const change of changes) await this.applyChange(change);
  }

  /**
   * Applies many changes, `INDEX_WRITES` requests in flight: changes of different blocks are
   * independent items, written up to `INDEX_BATCH` in one transaction (a transaction holds one
   * action per item); those of one block apply one after the other, in their order.
   */
  private async applyChanges(changes: BlockIndexChange[]): Promise<void> {
    const byBlock = new Map<BlockId, BlockIndexChange[]>();
    for (const change of changes) byBlock.set(change.id, [...(byBlock.get(change.id) ?? []), change]);
    const singles = [...byBlock.values()].filter((queue) => queue.length === 1).map(([change]) => change!);
    const work: (() => Promise<void>)[] = [];
    for (let at = 0; at < singles.length; at += INDEX_BATCH) {
      const batch = singles.slice(at, at + INDEX_BATCH);
      work.push(() => this.applyTogether(batch));
    }
    for (const queue of byBlock.values())
      if (queue.length > 1)
        work.push(async () => {
          for (const change of queue) await this.applyChange(change);
        });
    // After a failure the workers take no more work, and the record fails once every write in
    // flight has ended: none goes on writing after the caller has been told (and retries).
    let failed = false;
    const worker = async () => {
      for (let next = work.shift(); next && !failed; next = work.shift())
        await next().catch((e: unknown) => {
          failed = true;
          throw e;
        });
    };
    const results = await Promise.allSettled(Array.from({ length: Math.min(INDEX_WRITES, work.length) }, worker));
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  /** Logs a block-index event, then applies its changes. */
  private async appendAndApply(event: DomainEvent): Promise<void> {
    await this.appendToBlockIndex(event);
    for (const change of changesOf(event)) await this.applyChange(change);
  }

  async markUnreferenced(ids: BlockId[], at: string): Promise<void> {
    if (ids.length) await this.appendAndApply({ type: 'BlocksMarkedUnreferenced', v: 1, ids, at });
  }

  async unmark(ids: BlockId[], at: string): Promise<void> {
    if (ids.length) await this.appendAndApply({ type: 'BlocksReferenced', v: 1, ids, created: [], at });
  }

  async claimForDeletion(marks: { id: BlockId; markedAt: string }[], at: string): Promise<BlockId[]> {
    const claimed: BlockId[] = [];
    for (const m of marks) if (await this.applyChange({ kind: 'claimed', id: m.id, markedAt: m.markedAt })) claimed.push(m.id);
    if (claimed.length) await this.appendToBlockIndex({ type: 'BlocksDeletionClaimed', v: 1, ids: claimed, at });
    return claimed;
  }

  async removeBlocks(ids: BlockId[], at: string): Promise<void> {
    if (ids.length) await this.appendAndApply({ type: 'BlocksDeleted', v: 1, ids, at });
  }

  async rekeyBlocks(blocks: StoredBlock[], at: string): Promise<void> {
    if (blocks.length) await this.appendAndApply({ type: 'BlocksRekeyed', v: 1, blocks, at });
  }

  async touchBlocks(blocks: StoredBlock[], at: string): Promise<Map<BlockId, TouchResult>> {
    const results = new Map<BlockId, TouchResult>();
    for (const b of blocks) results.set(b.id, await this.touch(b, at));
    const ids = blocks.filter((b) => results.get(b.id) === 'live').map((b) => b.id);
    const created = blocks.filter((b) => results.get(b.id) === 'created');
    if (ids.length || created.length) await this.appendToBlockIndex({ type: 'BlocksReferenced', v: 1, ids, created, at });
    return results;
  }

  /**
   * Neither write applied: the entry exists and was being deleted, or another touch created it
   * between the two writes (then, or if it is gone now, try again). Only this rare case reads.
   */
  private async touch(b: StoredBlock, at: string): Promise<TouchResult> {
    for (;;) {
      for (const attempt of touchAttempts(b, at)) if (await this.applyChange(attempt.change)) return attempt.finds;
      const existing = await this.db.send(new GetCommand({ TableName: this.projections, Key: blockKey(b.id), ConsistentRead: true }));
      if (touchFinds(existing.Item ? toEntry(existing.Item) : undefined) === 'deleting') return 'deleting';
    }
  }

  async getVersion(uid: string): Promise<Version | undefined> {
    const out = await this.db.send(new GetCommand({ TableName: this.projections, Key: { pk: VERSION_PK, sk: uid }, ConsistentRead: true }));
    return out.Item?.['data'] ? toVersion(out.Item) : undefined;
  }

  async listVersions(): Promise<Version[]> {
    const versions: Version[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const page = await this.db.send(
        new QueryCommand({
          TableName: this.projections,
          KeyConditionExpression: 'pk = :pk',
          ExpressionAttributeValues: { ':pk': VERSION_PK },
          ExclusiveStartKey: start,
          ConsistentRead: true,
        }),
      );
      for (const item of page.Items ?? []) if (item['data']) versions.push(toVersion(item));
      start = page.LastEvaluatedKey;
    } while (start);
    return versions.sort((a, b) => a.name.localeCompare(b.name) || a.date.localeCompare(b.date));
  }

  async getChunk(uid: string, chunk: number): Promise<StoredChunk | undefined> {
    const out = await this.db.send(new GetCommand({ TableName: this.projections, Key: { pk: mapPk(uid), sk: chunkSk(chunk) } }));
    if (!out.Item) return undefined;
    const entries = out.Item['entries'] as Uint8Array | undefined;
    return {
      entries: entries ? Buffer.from(entries) : null,
      sameAs: out.Item['sameUid'] ? { uid: out.Item['sameUid'] as string, chunk: out.Item['sameChunk'] as number } : null,
    };
  }

  async getBlocks(ids: BlockId[]): Promise<Map<BlockId, BlockIndexEntry>> {
    const found = new Map<BlockId, BlockIndexEntry>();
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += 100) {
      let keys: Record<string, unknown>[] | undefined = unique.slice(i, i + 100).map(blockKey);
      for (let attempt = 0; keys?.length; attempt++) {
        const out: BatchGetCommandOutput = await this.db.send(new BatchGetCommand({ RequestItems: { [this.projections]: { Keys: keys } } }));
        for (const item of out.Responses?.[this.projections] ?? []) found.set(item['sk'] as string, toEntry(item));
        keys = out.UnprocessedKeys?.[this.projections]?.Keys;
        if (keys?.length) await new Promise((r) => setTimeout(r, Math.min(2000, 50 * 2 ** attempt)));
      }
    }
    return found;
  }

  async *scanBlocks(): AsyncIterable<BlockIndexEntry[]> {
    for (const pk of SHARDS) {
      let start: Record<string, unknown> | undefined;
      do {
        const page = await this.db.send(
          new QueryCommand({
            TableName: this.projections,
            KeyConditionExpression: 'pk = :pk',
            ExpressionAttributeValues: { ':pk': pk },
            ExclusiveStartKey: start,
            ConsistentRead: true,
          }),
        );
        if (page.Items?.length) yield page.Items.map(toEntry);
        start = page.LastEvaluatedKey;
      } while (start);
    }
  }

  /** Served-version leases: items pk "LEASE", sk "<uid>#<holder>" (written by the api function, read by cleanup). */
  async putLease(lease: VersionLease): Promise<void> {
    const item = { pk: LEASE_PK, sk: `${lease.uid}#${lease.holder}`, uid: lease.uid, holder: lease.holder, expiresAt: lease.expiresAt };
    await this.db.send(new PutCommand({ TableName: this.projections, Item: item }));
  }

  async dropLease(uid: string, holder: string): Promise<void> {
    await this.db.send(new DeleteCommand({ TableName: this.projections, Key: { pk: LEASE_PK, sk: `${uid}#${holder}` } }));
  }

  async listLeases(): Promise<VersionLease[]> {
    const leases: VersionLease[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const page = await this.db.send(
        new QueryCommand({
          TableName: this.projections,
          KeyConditionExpression: 'pk = :pk',
          ExpressionAttributeValues: { ':pk': LEASE_PK },
          ExclusiveStartKey: start,
          ConsistentRead: true,
        }),
      );
      for (const item of page.Items ?? [])
        leases.push({ uid: item['uid'] as string, holder: item['holder'] as string, expiresAt: item['expiresAt'] as string });
      start = page.LastEvaluatedKey;
    } while (start);
    return leases;
  }

  async *readAllEvents(): AsyncIterable<DomainEvent> {
    const all: { at: string; stream: string; seq: number; data: string }[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const page = await this.db.send(new ScanCommand({ TableName: this.events, ExclusiveStartKey: start, ConsistentRead: true }));
      for (const item of page.Items ?? [])
        if (typeof item['data'] === 'string' && typeof item['at'] === 'string') all.push(item as { at: string; stream: string; seq: number; data: string });
      start = page.LastEvaluatedKey;
    } while (start);
    all.sort((a, b) => a.at.localeCompare(b.at) || a.stream.localeCompare(b.stream) || a.seq - b.seq);
    for (const item of all) yield parseEvent(JSON.parse(item.data));
  }
}

function toVersion(item: Record<string, unknown>): Version {
  return { ...(JSON.parse(item['data'] as string) as Version), recordedChunks: Number(item['recordedChunks'] ?? 0), seq: Number(item['seq']) };
}

function toEntry(item: Record<string, unknown>): BlockIndexEntry {
  return {
    id: item['sk'] as string,
    storedSize: Number(item['storedSize'] ?? 0),
    checksum: (item['checksum'] as string) ?? '',
    createdAt: (item['createdAt'] as string) ?? '',
    unreferencedSince: (item['unreferencedSince'] as string | undefined) ?? null,
    deleting: item['deleting'] === true,
    valid: item['valid'] !== false,
  };
}
