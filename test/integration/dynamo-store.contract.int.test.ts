import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DynamoMetadataStore } from '../../shared/adapters/aws/dynamo-store.ts';
import { executeVersionCommand } from '../../shared/app/execute.ts';
import { ExitCode } from '../../shared/domain/errors.ts';
import { chunkRecord, id, metadataStoreContract, policy, start } from '../contract/metadata-store.contract.ts';
import { clientConfig, testStack } from './context.ts';
import { FaultProxy, type Fault, type ProxiedRequest } from './fault-proxy.ts';

const storeAt = (endpoint?: string) => {
  const stack = testStack();
  const db = DynamoDBDocumentClient.from(new DynamoDBClient({ ...clientConfig(), ...(endpoint ? { endpoint } : {}) }), {
    marshallOptions: { removeUndefinedValues: true },
  });
  return new DynamoMetadataStore(db, { eventsTable: stack.outputs.EventsTableName, projectionsTable: stack.outputs.ProjectionsTableName });
};

/** The same contract as the SQLite store, against the deployed stack's tables. */
metadataStoreContract('DynamoDB (deployed stack)', async () => storeAt(), { propertyRuns: 50 });

// The contract's backups never finish: failed at the end, they do not make a later file's `cleanup -f` refuse (the files share one stack).
afterAll(async () => {
  const store = storeAt();
  for (const v of await store.listVersions())
    if (v.status === 'pending' && v.name === 'vm1' && v.host === 'h')
      await executeVersionCommand(store, { type: 'FailVersion', uid: v.uid, reason: 'contract test over' }, policy);
});

/** What DynamoDB answers a transaction that met another request on one of its items, and a single write that met a transaction. */
const CANCELLED: Fault = {
  status: 400,
  code: 'TransactionCanceledException',
  message: 'Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]',
};
const CONFLICT: Fault = { status: 400, code: 'TransactionConflictException', message: 'Transaction is ongoing for the item' };
/** A request that writes block-index entries (pk BLOCK#xx), by operation. */
const writesIndex = (req: ProxiedRequest, operation: string) => req.target === `DynamoDB_20120810.${operation}` && req.body.includes('"S":"BLOCK#');

/**
 * The emulator serialises every request, so it never answers with a transaction conflict; on AWS a
 * chunk's index transaction can meet a cleanup's claim or delete of one of its entries (and the other
 * way round). These answers are injected on the way, the conflicting requests themselves never reach
 * the tables, and what the store writes instead reaches the real tables.
 */
describe('DynamoDB store: block-index writes that meet a transaction (conflicts injected by a proxy)', () => {
  let proxy: FaultProxy;
  let store: DynamoMetadataStore;
  beforeAll(async () => {
    proxy = await FaultProxy.start(testStack().endpoint);
    store = storeAt(proxy.url);
  });
  beforeEach(() => proxy.heal());
  afterAll(async () => proxy?.close());

  /** A backup in progress, and its chunk of 250 new blocks (three index transactions). */
  async function pendingChunk() {
    const uid = randomUUID();
    await executeVersionCommand(store, start(uid, 250, 250), policy);
    return chunkRecord(uid, 0, Array.from({ length: 250 }, id));
  }

  async function expectLive(ids: string[]) {
    const index = await store.getBlocks(ids);
    expect(index.size).toBe(ids.length);
    for (const blockId of ids) expect(index.get(blockId)).toMatchObject({ unreferencedSince: null, deleting: false, valid: true });
  }

  it('cancelled index transactions are written entry by entry, a write that met a transaction tried again: every entry live, the chunk counted once', async () => {
    const record = await pendingChunk();
    let conflicts = 0;
    proxy.inject((req) => {
      if (writesIndex(req, 'TransactWriteItems')) return CANCELLED;
      if (!writesIndex(req, 'UpdateItem') || conflicts === 3) return undefined;
      conflicts++;
      return CONFLICT;
    });
    expect(await store.recordChunk(record)).toBe(true);
    expect(proxy.count('TransactionCanceledException')).toBe(3);
    expect(proxy.count('TransactionConflictException')).toBe(3);
    proxy.heal();
    await expectLive(record.newBlocks.map((b) => b.id));
    expect((await store.getVersion(record.uid))?.recordedChunks).toBe(1);
  });

  it('an entry that keeps meeting transactions fails the record without counting it; the redelivery completes it, a duplicate changes nothing', async () => {
    const record = await pendingChunk();
    proxy.inject((req) => (writesIndex(req, 'TransactWriteItems') ? CANCELLED : writesIndex(req, 'UpdateItem') ? CONFLICT : undefined));
    await expect(store.recordChunk(record)).rejects.toMatchObject({
      exitCode: ExitCode.cloud,
      message: expect.stringMatching(/held by other transactions through 5 attempts \(TransactionConflictException\); run the command again$/),
    });
    // Each of the three cancelled transactions' first entry was tried 5 times; then nothing was left writing.
    expect((await store.getVersion(record.uid))?.recordedChunks).toBe(0);
    expect(proxy.count('TransactionCanceledException')).toBe(3);
    expect(proxy.count('TransactionConflictException')).toBe(15);
    proxy.heal();
    expect(await store.recordChunk(record)).toBe(true);
    await expectLive(record.newBlocks.map((b) => b.id));
    expect(await store.recordChunk(record)).toBe(false);
    expect((await store.getVersion(record.uid))?.recordedChunks).toBe(1);
  });

  it("a cleanup's claim and delete that met a transaction are tried again and apply exactly when their conditions hold", async () => {
    const old = randomUUID();
    await executeVersionCommand(store, start(old, 2, 2), policy);
    const [kept, gone] = [id(), id()];
    await store.recordChunk(chunkRecord(old, 0, [kept, gone]));
    const t1 = '2026-01-01T00:00:00.000Z';
    await store.markUnreferenced([kept, gone], t1);
    await store.unmark([kept], t1);
    let conflicts = 0;
    proxy.inject((req) => ((writesIndex(req, 'UpdateItem') || writesIndex(req, 'DeleteItem')) && conflicts++ % 2 === 0 ? CONFLICT : undefined));
    const claims = [kept, gone].map((x) => ({ id: x, markedAt: t1 }));
    expect(await store.claimForDeletion(claims, t1)).toEqual([gone]);
    await store.removeBlocks([kept, gone], t1);
    expect(proxy.count('TransactionConflictException')).toBe(4);
    proxy.heal();
    const index = await store.getBlocks([kept, gone]);
    expect([...index.keys()]).toEqual([kept]);
    expect(index.get(kept)).toMatchObject({ unreferencedSince: null, deleting: false });
  });
});
