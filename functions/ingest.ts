// PLACEHOLDER (infra wiring): replaced by the real ingest handler over the shared core.
// Writes one item per SQS record to the projections table; a body with "fail": true is
// reported as a batch item failure, so partial-batch handling can be tested.
import middy from '@middy/core';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';

const ddb = DynamoDBDocumentClient.from(new DynamoDBClient({}));

export const handler = middy<SQSEvent, SQSBatchResponse>().handler(async (event) => {
  const batchItemFailures: SQSBatchResponse['batchItemFailures'] = [];
  for (const record of event.Records) {
    let body: { fail?: boolean; id?: string } = {};
    try { body = JSON.parse(record.body) as typeof body; } catch { /* not JSON */ }
    await ddb.send(new PutCommand({
      TableName: process.env.PROJECTIONS_TABLE,
      Item: {
        pk: 'placeholder#ingest',
        sk: `${body.id ?? record.messageId}#${record.attributes.ApproximateReceiveCount}`,
        body: record.body,
        batchSize: event.Records.length,
        failed: body.fail === true,
      },
    }));
    if (body.fail === true) batchItemFailures.push({ itemIdentifier: record.messageId });
  }
  return { batchItemFailures };
});
