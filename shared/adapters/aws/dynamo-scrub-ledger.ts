import { GetCommand, PutCommand, QueryCommand, UpdateCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { BlockFailure } from '../../domain/scrub.ts';
import type { ScrubLedger, ScrubStatus } from '../../ports/scrub-ledger.ts';

/** Scrub progress in the projections table: pk "SCRUB#<id>", sk "META" or the batch number. */
export class DynamoScrubLedger implements ScrubLedger {
  private readonly db: DynamoDBDocumentClient;
  private readonly table: string;
  constructor(db: DynamoDBDocumentClient, table: string) {
    this.db = db;
    this.table = table;
  }

  async create(scrubId: string, uid: string, batches: number, percent: number): Promise<void> {
    await this.db.send(
      new PutCommand({
        TableName: this.table,
        Item: { pk: `SCRUB#${scrubId}`, sk: 'META', uid, batches, percent, doneBatches: 0, finished: false, at: new Date().toISOString() },
      }),
    );
  }

  async recordBatch(scrubId: string, batch: number, verified: string[], failures: BlockFailure[]): Promise<boolean> {
    try {
      await this.db.send(
        new PutCommand({
          TableName: this.table,
          Item: { pk: `SCRUB#${scrubId}`, sk: `B${String(batch).padStart(8, '0')}`, verified, failures },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
    } catch (e) {
      if ((e as { name?: string }).name === 'ConditionalCheckFailedException') return false; // redelivery
      throw e;
    }
    const out = await this.db.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { pk: `SCRUB#${scrubId}`, sk: 'META' },
        UpdateExpression: 'ADD doneBatches :one',
        ExpressionAttributeValues: { ':one': 1 },
        ReturnValues: 'ALL_NEW',
      }),
    );
    return Number(out.Attributes?.['doneBatches']) === Number(out.Attributes?.['batches']);
  }

  async results(scrubId: string) {
    const meta = (await this.db.send(new GetCommand({ TableName: this.table, Key: { pk: `SCRUB#${scrubId}`, sk: 'META' }, ConsistentRead: true }))).Item!;
    const verified: string[] = [];
    const failures: BlockFailure[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const page = await this.db.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'pk = :pk AND begins_with(sk, :b)',
          ExpressionAttributeValues: { ':pk': `SCRUB#${scrubId}`, ':b': 'B' },
          ExclusiveStartKey: start,
          ConsistentRead: true,
        }),
      );
      for (const item of page.Items ?? []) {
        verified.push(...(item['verified'] as string[]));
        failures.push(...(item['failures'] as BlockFailure[]));
      }
      start = page.LastEvaluatedKey;
    } while (start);
    return { verified, failures, percent: Number(meta['percent']), uid: meta['uid'] as string };
  }

  async finish(scrubId: string, checked: number, failures: BlockFailure[]): Promise<void> {
    await this.db.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { pk: `SCRUB#${scrubId}`, sk: 'META' },
        UpdateExpression: 'SET finished = :t, checked = :c, failures = :f',
        ExpressionAttributeValues: { ':t': true, ':c': checked, ':f': failures },
      }),
    );
  }

  async status(scrubId: string): Promise<ScrubStatus | undefined> {
    const item = (await this.db.send(new GetCommand({ TableName: this.table, Key: { pk: `SCRUB#${scrubId}`, sk: 'META' }, ConsistentRead: true }))).Item;
    if (!item) return undefined;
    return {
      scrubId,
      uid: item['uid'] as string,
      batches: Number(item['batches']),
      doneBatches: Number(item['doneBatches'] ?? 0),
      finished: item['finished'] === true,
      checked: Number(item['checked'] ?? 0),
      failures: (item['failures'] as BlockFailure[] | undefined) ?? [],
    };
  }
}
