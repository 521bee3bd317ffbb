/**
 * A Lambda handler used only by the emulator tests (test/integration/emulator.int.test.ts)
 * to observe how the emulator runs functions, independent of the product's handlers.
 * Every invocation is recorded in the table PROBE_TABLE:
 * - SQS batches: one item per record (pk `sqs`, sk `<id>#<receive count>`, with the batch size);
 *   records whose body has "fail": true are reported in batchItemFailures.
 * - anything else: pk `event`, sk an ISO time, with the event. `{ "throw": true }` throws.
 */
import { DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import type { Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';

const ddb = new DynamoDBClient({});
const TABLE = process.env.PROBE_TABLE;

async function record(pk: string, sk: string, data: Record<string, unknown>): Promise<void> {
  await ddb.send(
    new PutItemCommand({
      TableName: TABLE,
      Item: { pk: { S: pk }, sk: { S: sk }, data: { S: JSON.stringify(data) } },
    }),
  );
}

export async function handler(event: unknown, context: Context): Promise<unknown> {
  const sqs = event as Partial<SQSEvent>;
  if (Array.isArray(sqs.Records) && sqs.Records[0]?.eventSource === 'aws:sqs') {
    const failures: SQSBatchResponse['batchItemFailures'] = [];
    for (const r of sqs.Records) {
      const body = JSON.parse(r.body) as { id: string; fail?: boolean };
      await record('sqs', `${body.id}#${r.attributes.ApproximateReceiveCount}`, {
        batchSize: sqs.Records.length,
        messageId: r.messageId,
        fail: body.fail === true,
      });
      if (body.fail) failures.push({ itemIdentifier: r.messageId });
    }
    return { batchItemFailures: failures };
  }
  if ((event as { throw?: boolean } | null)?.throw) throw new Error('probe asked to fail');
  await record('event', new Date().toISOString(), { event });
  return {
    node: process.version,
    arch: process.arch,
    memory: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    functionName: context.functionName,
    remainingMs: context.getRemainingTimeInMillis(),
    env: Object.fromEntries(
      Object.entries(process.env).filter(([k]) => /^(PROBE_|AWS_REGION|AWS_ENDPOINT_URL|AWS_LAMBDA_|LAMBDA_TASK_ROOT|NODE_OPTIONS|TZ)/.test(k)),
    ),
    event,
  };
}
